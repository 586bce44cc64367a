import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { ContentNotFoundError, HashMismatchError } from './errors.js'
import { SHA256_HEX } from './encoding.js'

export interface PutOptions {
  /**
   * The caller computed `sha256` from these very bytes (the chunker, a
   * verified download), so hashing them again would prove nothing. @default false
   */
  hashedByCaller?: boolean
  /**
   * Flush the file to disk before it becomes visible. Callers that write many
   * chunks in a row may skip it and call `syncAll` once before they promise
   * durability. @default true
   */
  sync?: boolean
  /** Look for the content before writing it. A caller that tracks what the store holds skips the lookup. @default true */
  checkExisting?: boolean
}

/**
 * Content-addressed files: `<root>/<first two hex>/<sha256>`. A file appears
 * under its name only once it is whole (written to a temporary file, then
 * renamed), and a read checks the hash, so a crash or a bit flip can never
 * pass for good content.
 */
/** A shared folder's temporary files older than this belong to a writer that is gone: 1 day. */
const STALE_TEMPORARY_MS = 24 * 3600_000

export class ContentStore {
  readonly root: string
  private readonly temporary: string
  private readonly unsynced = new Set<string>()
  /** Prefix folders known to exist. */
  private readonly folders = new Set<string>()

  private readonly shared: boolean

  /**
   * `shared`: other processes (coordinators) write into the same folder at
   * the same time: this one writes its temporary files in a folder of its own
   * and removes only those others left long ago.
   */
  constructor (root: string, init: { shared?: boolean } = {}) {
    this.root = root
    this.shared = init.shared ?? false
    this.temporary = this.shared ? join(root, 'tmp', `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`) : join(root, 'tmp')
  }

  /** Creates the folders and removes what an interrupted write left behind. */
  async open (): Promise<void> {
    if (this.shared) {
      // Another coordinator's temporary files are its own business until they are old enough to be lost.
      const parent = join(this.root, 'tmp')
      const before = Date.now() - STALE_TEMPORARY_MS
      for (const name of await readdir(parent).catch(() => [] as string[])) {
        const info = await stat(join(parent, name)).catch(() => undefined)
        if (info?.isDirectory() === true && info.mtimeMs < before) await rm(join(parent, name), { recursive: true, force: true })
      }
    } else {
      await rm(this.temporary, { recursive: true, force: true })
    }
    await mkdir(this.temporary, { recursive: true })
  }

  /** When the content was written, ms; undefined when it is not here. */
  async modifiedAt (sha256: string): Promise<number | undefined> {
    try {
      return (await stat(this.pathOf(sha256))).mtimeMs
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw error
    }
  }

  pathOf (sha256: string): string {
    if (!SHA256_HEX.test(sha256)) throw new TypeError(`not a SHA-256: ${sha256}`)
    return join(this.root, sha256.slice(0, 2), sha256)
  }

  async has (sha256: string): Promise<boolean> {
    try {
      await stat(this.pathOf(sha256))
      return true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false
      throw error
    }
  }

  /**
   * Stores bytes under their hash. Throws HashMismatchError, leaving nothing,
   * when `sha256` is given and does not match. Returns whether the content
   * was new.
   */
  async put (bytes: Uint8Array, sha256?: string, options: PutOptions = {}): Promise<{ sha256: string, created: boolean }> {
    const actual = options.hashedByCaller === true && sha256 !== undefined ? sha256 : createHash('sha256').update(bytes).digest('hex')
    if (sha256 !== undefined && actual !== sha256) throw new HashMismatchError(sha256, actual, 'chunk')
    const target = this.pathOf(actual)
    if (options.checkExisting !== false && await this.has(actual)) return { sha256: actual, created: false }
    const sync = options.sync ?? true
    const temporary = join(this.temporary, `${actual}.${randomBytes(6).toString('hex')}`)
    const folder = actual.slice(0, 2)
    if (!this.folders.has(folder)) {
      await mkdir(join(this.root, folder), { recursive: true })
      this.folders.add(folder)
    }
    const handle = await open(temporary, 'w', 0o644)
    try {
      await handle.writeFile(bytes)
      if (sync) await handle.sync()
    } catch (error) {
      await handle.close()
      await unlink(temporary).catch(() => {})
      throw error
    }
    await handle.close()
    try {
      await rename(temporary, target)
    } catch (error) {
      await unlink(temporary).catch(() => {})
      throw error
    }
    if (!sync) this.unsynced.add(actual)
    return { sha256: actual, created: true }
  }

  /** Flushes every file written with `sync: false` since the last call. */
  async syncAll (): Promise<void> {
    const pending = [...this.unsynced]
    this.unsynced.clear()
    const directories = new Set<string>()
    for (const sha256 of pending) {
      const handle = await open(this.pathOf(sha256), 'r').catch(() => undefined)
      if (handle === undefined) continue
      try { await handle.sync() } finally { await handle.close() }
      directories.add(join(this.root, sha256.slice(0, 2)))
    }
    for (const directory of directories) {
      const handle = await open(directory, 'r')
      try { await handle.sync() } finally { await handle.close() }
    }
  }

  /**
   * Reads content and checks its hash. A corrupt file is removed and
   * reported. `verify: false` is for a caller that checked these very bytes
   * earlier in its life (it wrote them after hashing them, or read and hashed
   * them) and checks what it builds from them again anyway.
   */
  async get (sha256: string, options: { verify?: boolean } = {}): Promise<Buffer> {
    let bytes: Buffer
    try {
      bytes = await readFile(this.pathOf(sha256))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new ContentNotFoundError(sha256)
      throw error
    }
    if (options.verify === false) return bytes
    const actual = createHash('sha256').update(bytes).digest('hex')
    if (actual !== sha256) {
      await unlink(this.pathOf(sha256)).catch(() => {})
      throw new HashMismatchError(sha256, actual, 'stored content')
    }
    return bytes
  }

  async delete (sha256: string): Promise<boolean> {
    try {
      await unlink(this.pathOf(sha256))
      return true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false
      throw error
    }
  }

  /** Every stored hash. */
  async * list (): AsyncGenerator<string> {
    let prefixes: string[]
    try {
      prefixes = await readdir(this.root)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
      throw error
    }
    for (const prefix of prefixes) {
      if (!/^[0-9a-f]{2}$/.test(prefix)) continue
      for (const name of await readdir(join(this.root, prefix))) {
        if (SHA256_HEX.test(name) && name.startsWith(prefix)) yield name
      }
    }
  }
}
