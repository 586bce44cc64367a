import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync, rmSync } from 'node:fs'
import { chown, mkdtemp, rm, chmod } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'

const run = promisify(execFile)

/** Debian's server binaries, newest version first. */
function binaryFolder (): string | undefined {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return undefined
  const versions = readdirSync(root).filter(name => /^\d+$/.test(name)).sort((a, b) => Number(b) - Number(a))
  for (const version of versions) {
    const folder = join(root, version, 'bin')
    if (existsSync(join(folder, 'initdb')) && existsSync(join(folder, 'postgres'))) return folder
  }
  return undefined
}

/** Why a PostgreSQL server cannot be started here, or undefined when it can. */
export function postgresMissing (): string | undefined {
  if (binaryFolder() === undefined) return 'PostgreSQL server binaries are missing under /usr/lib/postgresql/*/bin (apt-get install -y postgresql)'
  return undefined
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port
      server.close(() => { resolve(port) })
    })
  })
}

/** The unprivileged account the server runs as when the tests run as root (it refuses root). */
const UNPRIVILEGED = { name: 'nobody', uid: 65534, gid: 65534 }

/**
 * A private PostgreSQL cluster: initdb into a temporary folder, the server on
 * a free loopback port (and a socket in that folder), trust authentication
 * for loopback only. Stopped, and its folder removed, by `stop`.
 */
export class TestPostgres {
  private databases = 0
  private constructor (
    readonly folder: string,
    readonly port: number,
    private readonly child: ChildProcess,
    private log: { text: string }
  ) {}

  static async start (): Promise<TestPostgres> {
    const bin = binaryFolder()
    if (bin === undefined) throw new Error(postgresMissing())
    const folder = await mkdtemp(join(tmpdir(), 'md-postgres-'))
    const data = join(folder, 'data')
    const asRoot = process.getuid?.() === 0
    const owner = asRoot ? { uid: UNPRIVILEGED.uid, gid: UNPRIVILEGED.gid } : {}
    if (asRoot) {
      await chown(folder, UNPRIVILEGED.uid, UNPRIVILEGED.gid)
    }
    await chmod(folder, 0o700)
    try {
      await run(join(bin, 'initdb'), ['-D', data, '-U', 'meshdeploy', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { ...owner, cwd: folder, env: { PATH: process.env.PATH ?? '' } })
    } catch (error) {
      await rm(folder, { recursive: true, force: true })
      throw new Error(`initdb failed: ${(error as { stderr?: string }).stderr ?? String(error)}`)
    }
    const port = await freePort()
    const log = { text: '' }
    const child = spawn(join(bin, 'postgres'), [
      '-D', data, '-p', String(port), '-k', folder, '-c', 'listen_addresses=127.0.0.1',
      '-c', 'max_connections=200', '-c', 'shared_buffers=32MB', '-c', 'fsync=on'
    ], { ...owner, cwd: folder, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } })
    const append = (chunk: Buffer): void => { log.text = (log.text + chunk.toString()).slice(-20_000) }
    child.stdout!.on('data', append)
    child.stderr!.on('data', append)
    const server = new TestPostgres(folder, port, child, log)
    const deadline = Date.now() + 30_000
    for (;;) {
      if (child.exitCode !== null) {
        await rm(folder, { recursive: true, force: true })
        throw new Error(`postgres exited: ${log.text}`)
      }
      try {
        const client = new pg.Client({ connectionString: server.url('postgres') })
        await client.connect()
        await client.end()
        break
      } catch (error) {
        if (Date.now() > deadline) {
          await server.stop()
          throw new Error(`postgres did not accept connections: ${String(error)}\n${log.text}`)
        }
        await new Promise(resolve => setTimeout(resolve, 100))
      }
    }
    return server
  }

  /** The address of one database of the cluster. */
  url (database: string): string {
    return `postgres://meshdeploy@127.0.0.1:${this.port}/${database}`
  }

  /** A new, empty database; its address. */
  async createDatabase (prefix = 'md'): Promise<string> {
    const name = `${prefix}_${++this.databases}_${process.pid}`
    const client = new pg.Client({ connectionString: this.url('postgres') })
    await client.connect()
    try {
      await client.query(`CREATE DATABASE ${name} ENCODING 'UTF8'`)
    } finally {
      await client.end()
    }
    return this.url(name)
  }

  /** The server's recent log, for a failing test's message. */
  get output (): string {
    return this.log.text
  }

  /** Lets the process exit while the server runs. */
  unref (): void {
    this.child.unref()
    ;(this.child.stdout as unknown as { unref?: () => void }).unref?.()
    ;(this.child.stderr as unknown as { unref?: () => void }).unref?.()
  }

  /** At process exit, where nothing can be awaited: kill the server and remove its folder. */
  killNow (): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL')
    rmSync(this.folder, { recursive: true, force: true })
  }

  async stop (): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise(resolve => this.child.once('exit', resolve))
      // SIGINT: the fast shutdown, which ends client connections and exits.
      this.child.kill('SIGINT')
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }
    await rm(this.folder, { recursive: true, force: true })
  }
}

/**
 * The reason PostgreSQL tests are skipped here, or undefined when they run.
 * Under CI=true a missing server is a failure, not a skip: `.ci/run` installs it.
 */
export function postgresSkipReason (): string | undefined {
  const missing = postgresMissing()
  if (missing === undefined) return undefined
  if (process.env.CI === 'true') throw new Error(`${missing}; CI must install it`)
  return missing
}

let shared: Promise<TestPostgres> | undefined

/**
 * Where suites run once more on PostgreSQL: with MESHDEPLOY_TEST_STORE=postgres,
 * every test coordinator of the process gets a new database of one private
 * cluster, started on first use and stopped when the process exits.
 */
export function testStoreFromEnvironment (): 'postgres' | undefined {
  return process.env.MESHDEPLOY_TEST_STORE === 'postgres' ? 'postgres' : undefined
}

export async function sharedTestDatabase (): Promise<string> {
  shared ??= TestPostgres.start().then(server => {
    // The test process must be able to exit with the server still up: it is killed on the way out.
    server.unref()
    process.once('exit', () => { server.killNow() })
    return server
  })
  return await (await shared).createDatabase('suite')
}
