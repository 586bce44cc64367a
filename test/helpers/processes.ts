import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import type { TlsTrust } from '../../protocol/index.js'
import { sharedTestDatabase, testStoreFromEnvironment } from './postgres.js'

export const BIN = resolve(import.meta.dirname, '../../bin/meshdeploy.js')

export interface ManagedProcess {
  child: ChildProcess
  logFile: string
  event: Record<string, any>
  /** SIGTERM, then SIGKILL after a grace period. */
  stop: () => Promise<void>
  /** SIGKILL at once. */
  kill: () => Promise<void>
}

/** Every process a test file starts, stopped when the file's tests end. */
const started = new Set<ChildProcess>()
process.on('exit', () => { for (const child of started) child.kill('SIGKILL') })

/** Runs `meshdeploy …` and waits for its start event; `prefix` runs it through another command (ip netns exec …). */
export async function startMeshdeploy (args: string[], logFile: string, expectedEvent: string, options: { prefix?: string[], timeoutMs?: number, env?: NodeJS.ProcessEnv, command?: string[] } = {}): Promise<ManagedProcess> {
  const [command, ...commandArgs] = [...(options.prefix ?? []), ...(options.command ?? [process.execPath, BIN]), ...args]
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env })
  started.add(child)
  const log = createWriteStream(logFile, { flags: 'a' })
  child.stderr!.pipe(log)
  const exited = new Promise<void>(resolve => { child.once('exit', () => { started.delete(child); resolve() }) })
  const lines = createInterface({ input: child.stdout! })
  const event = await new Promise<Record<string, any>>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`meshdeploy ${args.slice(0, 2).join(' ')} did not start; see ${logFile}`)) }, options.timeoutMs ?? 30_000)
    void exited.then(() => { clearTimeout(timer); reject(new Error(`meshdeploy ${args.slice(0, 2).join(' ')} exited with ${child.exitCode ?? child.signalCode}; see ${logFile}`)) })
    lines.on('line', line => {
      log.write(line + '\n')
      try {
        const parsed = JSON.parse(line)
        if (parsed.event === expectedEvent) { clearTimeout(timer); resolve(parsed) }
      } catch {}
    })
  })
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => { child.kill('SIGKILL') }, 10_000)
    await exited
    clearTimeout(timer)
  }
  const kill = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGKILL')
    await exited
  }
  return { child, logFile, event, stop, kill }
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => { resolve(port) })
    })
    server.on('error', reject)
  })
}

export interface CoordinatorProcess extends ManagedProcess {
  url: string
  dataDir: string
  adminToken: string
  api: ApiClient
}

/** The database of each data folder, when the suites run on PostgreSQL. */
const databases = new Map<string, string>()

export async function startCoordinatorProcess (options: { dataDir?: string, port?: number, chunkSizeKiB?: number, host?: string, prefix?: string[], extraArgs?: string[], apiTls?: TlsTrust } = {}): Promise<CoordinatorProcess> {
  const dataDir = options.dataDir ?? await mkdtemp(join(tmpdir(), 'md-e2e-coordinator-'))
  const args = ['coordinator', 'start', '--data', dataDir, '--port', String(options.port ?? 0), '--host', options.host ?? '127.0.0.1', '--log-level', 'info']
  if (options.chunkSizeKiB !== undefined) args.push('--chunk-size-kib', String(options.chunkSizeKiB))
  args.push(...(options.extraArgs ?? []))
  // The suites that run once more on PostgreSQL: a fresh database for a new data folder (a restart on the same folder keeps its database).
  if (testStoreFromEnvironment() === 'postgres' && !args.includes('--store')) {
    let store = databases.get(dataDir)
    if (store === undefined) databases.set(dataDir, store = await sharedTestDatabase())
    args.push('--store', store)
  }
  const managed = await startMeshdeploy(args, join(dataDir, '..', `${dataDir.split('/').pop()}.log`), 'coordinator-started', options.prefix !== undefined ? { prefix: options.prefix } : {})
  const adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim()
  const url = managed.event.url as string
  return { ...managed, url, dataDir, adminToken, api: new ApiClient({ url, token: adminToken, ...(options.apiTls !== undefined ? { tls: options.apiTls } : {}) }) }
}

export interface AgentProcess extends ManagedProcess {
  dataDir: string
  installRoot: string
  deviceId: string
}

export interface AgentOptions {
  coordinatorUrl: string
  enrollToken?: string
  hostname: string
  site?: string
  groups?: string[]
  dataDir?: string
  extraArgs?: string[]
  prefix?: string[]
  /** Runs another entry point than the meshdeploy command (a test wrapper), e.g. [node, --import, tsx, file]. */
  command?: string[]
  /** The agent's environment. @default process.env */
  env?: NodeJS.ProcessEnv
  /**
   * `loopback` (default): the libp2p node listens on 127.0.0.1 and mDNS is
   * off, as nothing may multicast in the host namespace; peers are found
   * through the coordinator's list. `as-given`: only what extraArgs say.
   */
  mesh?: 'loopback' | 'as-given'
}

export async function startAgentProcess (options: AgentOptions): Promise<AgentProcess> {
  const dataDir = options.dataDir ?? await mkdtemp(join(tmpdir(), `md-e2e-${options.hostname}-`))
  const installRoot = join(dataDir, 'root')
  await mkdir(installRoot, { recursive: true })
  const args = ['agent', 'start', '--data', dataDir, '--coordinator', options.coordinatorUrl, '--hostname', options.hostname, '--install-root', installRoot, '--log-level', 'info']
  if (options.coordinatorUrl.startsWith('http:')) args.push('--insecure-http')
  if (options.enrollToken !== undefined) args.push('--enroll-token', options.enrollToken)
  if (options.site !== undefined) args.push('--site', options.site)
  if (options.groups !== undefined) args.push('--groups', options.groups.join(','))
  if ((options.mesh ?? 'loopback') === 'loopback') args.push('--listen', '/ip4/127.0.0.1/tcp/0', '--mdns', 'off')
  args.push(...(options.extraArgs ?? []))
  const managed = await startMeshdeploy(args, `${dataDir}.log`, 'agent-started', {
    ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
    ...(options.command !== undefined ? { command: options.command } : {}),
    ...(options.env !== undefined ? { env: options.env } : {})
  })
  return { ...managed, dataDir, installRoot, deviceId: managed.event.deviceId as string }
}

/** Polls until `check` returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T> (check: () => Promise<T | undefined>, what: string, timeoutMs = 60_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined) return value
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last !== undefined ? `: ${(last as Error).message}` : ''}`)
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
}

const exec = promisify(execFile)

/** Runs a `meshdeploy` command to its end: its exit code and output. */
export async function runCli (args: string[], env: Record<string, string>): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, timeout: 120_000 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const failed = error as { code: number, stdout: string, stderr: string }
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr }
  }
}
