import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
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
for (const signal of ['exit', 'SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const child of running) child.kill('SIGKILL')
    if (signal !== 'exit') process.exit(130)
  })
}

/** Starts `meshdeploy …` (optionally behind a prefix such as `ip netns exec NS`) and waits for its start event. */
export async function startMeshdeploy (args: string[], logFile: string, expectedEvent: string, prefix: string[] = [], timeoutMs = 60_000): Promise<BenchProcess> {
  // MESHDEPLOY_BENCH_NODE_ARGS: node options for the started processes, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile them.
  const nodeArgs = (process.env.MESHDEPLOY_BENCH_NODE_ARGS ?? '').split(' ').filter(arg => arg !== '')
  const [command, ...rest] = [...prefix, process.execPath, ...nodeArgs, BIN, ...args]
  const child = spawn(command, rest, { stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  const exited = new Promise<void>(resolve => { child.once('exit', () => { running.delete(child); resolve() }) })
  const log = createWriteStream(logFile, { flags: 'a' })
  child.stderr!.pipe(log)
  const lines = createInterface({ input: child.stdout! })
  const event = await new Promise<Record<string, any>>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${args.slice(0, 2).join(' ')} did not start; see ${logFile}`)) }, timeoutMs)
    void exited.then(() => { clearTimeout(timer); reject(new Error(`${args.slice(0, 2).join(' ')} exited; see ${logFile}`)) })
    lines.on('line', line => {
      log.write(line + '\n')
      try {
        const parsed = JSON.parse(line)
        if (parsed.event === expectedEvent) { clearTimeout(timer); resolve(parsed) }
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
