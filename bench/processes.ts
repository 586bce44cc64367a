import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, rmSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { ApiClient } from '../coordinator/cli/api-client.js'
import { BENCH_DIR } from './report.js'

export const BIN = resolve(BENCH_DIR, '../bin/meshdeploy.js')
void dirname(fileURLToPath(import.meta.url))

export interface BenchProcess {
  child: ChildProcess
  pid: number
  event: Record<string, any>
  stop: () => Promise<void>
  kill: () => Promise<void>
}

const running = new Set<ChildProcess>()
/** Temporary folders of the run: removed when it ends, however it ends. */
const folders = new Set<string>()
for (const signal of ['exit', 'SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const child of running) child.kill('SIGKILL')
    if (signal !== 'exit') process.exit(signal === 'SIGINT' ? 130 : 143)
  })
}
// After the children above are killed.
process.once('exit', () => {
  for (const folder of folders) {
    try { rmSync(folder, { recursive: true, force: true, maxRetries: 3 }) } catch {}
  }
})

/**
 * Creates a temporary folder that is removed at exit, also after a failure
 * or Ctrl-C (call `removeNow` to remove it sooner). With
 * MESHDEPLOY_BENCH_KEEP=1 it stays, for its logs to be read.
 */
export async function temporaryFolder (name: string): Promise<{ path: string, removeNow: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `meshdeploy-bench-${name}-`))
  if (process.env.MESHDEPLOY_BENCH_KEEP === '1') {
    process.stdout.write(`keeping ${path} (MESHDEPLOY_BENCH_KEEP=1)\n`)
    return { path, removeNow: async () => {} }
  }
  folders.add(path)
  return {
    path,
    removeNow: async () => {
      await rm(path, { recursive: true, force: true, maxRetries: 3 })
      folders.delete(path)
    }
  }
}

/** Starts `meshdeploy …` (optionally behind a prefix such as `ip netns exec NS`) and waits for its start event. */
export async function startMeshdeploy (args: string[], logFile: string, expectedEvent: string, prefix: string[] = [], timeoutMs = 60_000): Promise<BenchProcess> {
  // MESHDEPLOY_BENCH_NODE_ARGS, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`: profiles every meshdeploy process of a run.
  const nodeArgs = process.env.MESHDEPLOY_BENCH_NODE_ARGS?.split(' ').filter(arg => arg !== '') ?? []
  const [command, ...rest] = [...prefix, process.execPath, ...nodeArgs, BIN, ...args]
  const child = spawn(command, rest, { stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  const exited = new Promise<void>(resolve => { child.once('exit', () => { running.delete(child); resolve() }) })
  const log = createWriteStream(logFile, { flags: 'a' })
  child.stderr!.pipe(log)
  const lines = createInterface({ input: child.stdout! })
  // The run's folder goes when it fails: the error carries the log's last lines.
  const failure = async (what: string): Promise<Error> => {
    await new Promise(resolve => { log.end(resolve) })
    const tail = (await readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-15).join('\n')
    return new Error(`${args.slice(0, 2).join(' ')} ${what} (exit code ${child.exitCode ?? child.signalCode ?? 'none'}); the end of ${logFile}:\n${tail}`)
  }
  const event = await new Promise<Record<string, any>>((resolve, reject) => {
    let started = false
    const timer = setTimeout(() => { void failure('did not start').then(reject) }, timeoutMs)
    void exited.then(() => { clearTimeout(timer); if (!started) void failure('exited').then(reject) })
    lines.on('line', line => {
      if (!log.writableEnded) log.write(line + '\n')
      try {
        const parsed = JSON.parse(line)
        if (parsed.event === expectedEvent) { started = true; clearTimeout(timer); resolve(parsed) }
      } catch {}
    })
  })
  return {
    child,
    pid: child.pid!,
    event,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => { child.kill('SIGKILL') }, 10_000)
      await exited
      clearTimeout(timer)
    },
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGKILL')
      await exited
    }
  }
}

export async function adminClient (dataDir: string, url: string): Promise<ApiClient> {
  const token = (await readFile(`${dataDir}/admin-token`, 'utf8')).trim()
  return new ApiClient({ url, token })
}
