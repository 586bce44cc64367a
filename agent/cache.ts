import { EventEmitter } from 'node:events'
import { createHash } from 'node:crypto'
import { open, readFile, rename, stat, writeFile } from 'node:fs/promises'
import { z } from 'zod'
import { ContentNotFoundError, ContentStore, HashMismatchError, MIB, type ManifestPackage } from '../protocol/index.js'
import { BufferPool } from './download/buffer-pool.js'

/** Default bound on the cache. */
export const DEFAULT_CACHE_MAX_BYTES = 10 * 1024 * MIB
/** Verified chunks kept in memory for serving peers, who ask for them piece by piece: the chunks a site is passing around at once (measured in `agent-cost`: 12 MiB serves a site of 6 as cheaply as 32 MiB, with 30 MiB less resident memory). */
export const DEFAULT_SERVE_BUFFER_BYTES = 12 * MIB

export interface ChunkCacheInit {
  root: string
  /** The package index, beside the chunks rather than among them. @default `${root}-index.json` */
  indexPath?: string
  /** Bound on the bytes of stored chunks; packages a task needs may exceed it. @default 10 GiB */
  maxBytes?: number
  /** @default DEFAULT_SERVE_BUFFER_BYTES */
  serveBufferBytes?: number
  /** Where received chunks' buffers come from and go back to. @default a pool of its own */
  buffers?: BufferPool
  now?: () => number
}

const indexSchema = z.object({
  version: z.literal(1),
  packages: z.array(z.object({
    id: z.string(),
    sizeBytes: z.number().int().min(0),
    chunkSizeBytes: z.number().int().min(1),
    chunks: z.array(z.string()),
    lastUsedAt: z.number()
  }))
})

/** A package the cache knows the chunk list of: what it may serve and what it evicts as a unit. */
export interface CachedPackage {
  id: string
  sizeBytes: number
  chunkSizeBytes: number
  chunks: string[]
  lastUsedAt: number
}

export interface CacheStats {
  usedBytes: number
  limitBytes: number
  /** Bytes of chunks that a pinned package holds. */
  pinnedBytes: number
  packages: number
}

/** The chunk is not in the cache, or its package is unknown. */
export class ChunkNotCachedError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ChunkNotCachedError'
  }
}

/**
 * The agent's chunk cache: content-addressed, written atomically, every read
 * checked against its hash. Writes are not flushed one by one: a chunk that a
 * crash damaged fails its hash check on the next read and is fetched again.
 *
 * It knows the chunk lists of the packages it holds (to serve peers and to
 * evict whole packages), keeps its size under a bound by evicting the least
 * recently used packages that no task needs, and never evicts a package
 * while a task pins it.
 */
export class ChunkCache extends EventEmitter<{ evicted: [packageId: string], changed: [] }> {
  readonly content: ContentStore
  readonly maxBytes: number
  private readonly root: string
  private readonly indexPath: string
  private readonly now: () => number
  private readonly serveBufferBytes: number
  /** Every stored chunk and its size. */
  private readonly sizes = new Map<string, number>()
  private usedBytes = 0
  private readonly packages = new Map<string, CachedPackage>()
  /** Package id → who needs it (task ids, prefetch ids). */
  private readonly pins = new Map<string, Set<string>>()
  private readonly serveBuffer = new Map<string, Buffer>()
  /** Chunks whose bytes on disk this process has hashed (before writing them, or on a read). */
  private readonly verified = new Set<string>()
  private serveBufferUsed = 0
  /**
   * Pooled buffers lent to peers' answers (readPiece until returnPiece),
   * with how many answers hold each: one evicted meanwhile goes back to the
   * pool only when the last answer is done with it.
   */
  private readonly lent = new Map<ArrayBuffer, number>()
  private readonly retiredWhileLent = new Set<ArrayBuffer>()
  /** Buffers for received chunks, reused once a chunk is stored and no longer served from memory. */
  readonly buffers: BufferPool
  private saving: Promise<void> = Promise.resolve()
  private evicting?: Promise<void>

  constructor (init: ChunkCacheInit) {
    super()
    this.root = init.root
    this.indexPath = init.indexPath ?? `${init.root}-index.json`
    this.content = new ContentStore(init.root)
    this.maxBytes = init.maxBytes ?? DEFAULT_CACHE_MAX_BYTES
    this.serveBufferBytes = init.serveBufferBytes ?? DEFAULT_SERVE_BUFFER_BYTES
    this.buffers = init.buffers ?? new BufferPool()
    this.now = init.now ?? Date.now
  }


  async open (): Promise<void> {
    await this.content.open()
    for await (const sha256 of this.content.list()) {
      const size = (await stat(this.content.pathOf(sha256)).catch(() => undefined))?.size
      if (size === undefined) continue
      this.sizes.set(sha256, size)
      this.usedBytes += size
    }
    let text: string | undefined
    try {
      text = await readFile(this.indexPath, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    }
    if (text !== undefined) {
      // A damaged index only costs the package list: the chunks stay and are evicted as orphans if need be.
      const parsed = indexSchema.safeParse((() => { try { return JSON.parse(text) } catch { return undefined } })())
      if (parsed.success) for (const entry of parsed.data.packages) this.packages.set(entry.id, entry)
    }
  }

  has (sha256: string): boolean {
    return this.sizes.has(sha256)
  }

  /**
   * Stores a chunk. `hashedByCaller`: the caller has just hashed these very
   * bytes against the manifest, so they are not hashed again. `pooled`: the
   * bytes are a buffer of `this.buffers` that the cache now owns: it keeps
   * it to serve peers, and gives it back to the pool once done with it
   * (also when the write fails).
   */
  async put (bytes: Uint8Array, sha256: string, options: { hashedByCaller?: boolean, pooled?: boolean } = {}): Promise<void> {
    const pooled = options.pooled === true && this.buffers.owns(bytes)
    let kept = false
    try {
      if (this.sizes.has(sha256)) return
      // The in-memory map says the chunk is absent: no lookup on disk first (a rename over an equal file is harmless).
      await this.content.put(bytes, sha256, { sync: false, hashedByCaller: options.hashedByCaller === true, checkExisting: false })
      this.verified.add(sha256)
      // Peers ask for a chunk soon after it is announced: keep it at hand.
      kept = this.keepForServing(sha256, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
      if (!this.sizes.has(sha256)) {
        this.sizes.set(sha256, bytes.byteLength)
        this.usedBytes += bytes.byteLength
        this.emit('changed')
      }
      if (this.usedBytes > this.maxBytes) void this.enforceLimit()
    } finally {
      if (pooled && !kept) this.buffers.release(bytes)
    }
  }

  /** Reads a chunk and checks its hash. */
  async get (sha256: string): Promise<Buffer> {
    try {
      const bytes = await this.content.get(sha256)
      this.verified.add(sha256)
      return bytes
    } catch (error) {
      if (error instanceof ContentNotFoundError || error instanceof HashMismatchError) this.forget(sha256)
      throw error
    }
  }

  /**
   * Reads a chunk, checking its hash only if this process has not checked
   * these bytes before (it wrote them after hashing them, or read and hashed
   * them once): for callers that check what they build from it again (the
   * whole file's hash, a peer's own check of every chunk it receives), as
   * BitTorrent clients do.
   */
  async read (sha256: string): Promise<Buffer> {
    if (!this.verified.has(sha256)) return await this.get(sha256)
    try {
      return await this.content.get(sha256, { verify: false })
    } catch (error) {
      if (error instanceof ContentNotFoundError) this.forget(sha256)
      throw error
    }
  }

  /** Checks the hash of each chunk again and drops those that fail: after a whole file built from them did not match. */
  async recheck (chunks: Iterable<string>): Promise<string[]> {
    const bad: string[] = []
    for (const sha256 of new Set(chunks)) {
      this.verified.delete(sha256)
      this.dropServeBuffer(sha256)
      try {
        await this.get(sha256)
      } catch (error) {
        if (!(error instanceof HashMismatchError || error instanceof ContentNotFoundError)) throw error
        bad.push(sha256)
      }
    }
    return bad
  }

  private forget (sha256: string): void {
    this.verified.delete(sha256)
    const size = this.sizes.get(sha256)
    if (size === undefined) return
    this.sizes.delete(sha256)
    this.usedBytes -= size
    this.dropServeBuffer(sha256)
    this.emit('changed')
  }

  /** Records a package's chunk list, so its chunks can be served and evicted together. */
  register (pkg: Pick<ManifestPackage, 'id' | 'sizeBytes' | 'chunkSizeBytes' | 'chunks'>): void {
    const existing = this.packages.get(pkg.id)
    if (existing !== undefined) {
      existing.lastUsedAt = this.now()
      return
    }
    this.packages.set(pkg.id, { id: pkg.id, sizeBytes: pkg.sizeBytes, chunkSizeBytes: pkg.chunkSizeBytes, chunks: [...pkg.chunks], lastUsedAt: this.now() })
    this.save()
  }

  package (packageId: string): CachedPackage | undefined {
    return this.packages.get(packageId)
  }

  /** Which chunks of a known package are stored, one bit per chunk (most significant bit first). */
  bitfield (packageId: string): { chunkCount: number, bits: Uint8Array, held: number } | undefined {
    const pkg = this.packages.get(packageId)
    if (pkg === undefined) return undefined
    const bits = new Uint8Array(Math.ceil(pkg.chunks.length / 8))
    let held = 0
    for (const [index, sha256] of pkg.chunks.entries()) {
      if (!this.sizes.has(sha256)) continue
      bits[index >> 3] |= 0x80 >> (index & 7)
      held++
    }
    return { chunkCount: pkg.chunks.length, bits, held }
  }

  /** Keeps a package from eviction while `holder` (a task) needs it. */
  pin (pkg: Pick<ManifestPackage, 'id' | 'sizeBytes' | 'chunkSizeBytes' | 'chunks'>, holder: string): void {
    this.register(pkg)
    let holders = this.pins.get(pkg.id)
    if (holders === undefined) {
      holders = new Set()
      this.pins.set(pkg.id, holders)
    }
    holders.add(holder)
  }

  unpin (packageId: string, holder: string): void {
    const holders = this.pins.get(packageId)
    if (holders === undefined) return
    holders.delete(holder)
    if (holders.size > 0) return
    this.pins.delete(packageId)
    const pkg = this.packages.get(packageId)
    if (pkg !== undefined) pkg.lastUsedAt = this.now()
    this.save()
    if (this.usedBytes > this.maxBytes) void this.enforceLimit()
  }

  isPinned (packageId: string): boolean {
    return this.pins.has(packageId)
  }

  /**
   * A piece of a chunk for a peer. The chunk is kept in a bounded buffer
   * (from when it is written or first read), because several peers ask for
   * a fresh chunk and a capped peer asks for it in many small pieces. It is
   * hashed on disk only if this process has not hashed it before: the peer
   * checks every chunk it receives anyway.
   */
  async readPiece (packageId: string, index: number, offset: number, length: number): Promise<Uint8Array> {
    const pkg = this.packages.get(packageId)
    const sha256 = pkg?.chunks[index]
    if (sha256 === undefined || !this.sizes.has(sha256)) throw new ChunkNotCachedError(`chunk ${index} of ${packageId} is not cached`)
    let bytes = this.serveBuffer.get(sha256)
    if (bytes === undefined) {
      bytes = await this.read(sha256)
      this.keepForServing(sha256, bytes)
    } else {
      // Most recently used last.
      this.serveBuffer.delete(sha256)
      this.serveBuffer.set(sha256, bytes)
    }
    if (offset + length > bytes.byteLength) throw new ChunkNotCachedError(`chunk ${index} of ${packageId} has ${bytes.byteLength} bytes, not ${offset + length}`)
    if (this.buffers.owns(bytes)) this.lent.set(bytes.buffer as ArrayBuffer, (this.lent.get(bytes.buffer as ArrayBuffer) ?? 0) + 1)
    return bytes.subarray(offset, offset + length)
  }

  /**
   * The answer that read these bytes (readPiece) is done with them: sent, or
   * abandoned. Until then a pooled buffer is not reused, even once evicted.
   */
  returnPiece (bytes: Uint8Array): void {
    const buffer = bytes.buffer as ArrayBuffer
    const count = this.lent.get(buffer)
    if (count === undefined) return
    if (count > 1) {
      this.lent.set(buffer, count - 1)
      return
    }
    this.lent.delete(buffer)
    if (this.retiredWhileLent.delete(buffer)) this.buffers.release(new Uint8Array(buffer))
  }

  /** Keeps a chunk in memory for serving; false when it is not kept (too large, or already there). */
  private keepForServing (sha256: string, bytes: Buffer): boolean {
    if (this.serveBuffer.has(sha256) || bytes.byteLength > this.serveBufferBytes) return false
    this.serveBuffer.set(sha256, bytes)
    this.serveBufferUsed += bytes.byteLength
    for (const [key, value] of this.serveBuffer) {
      if (this.serveBufferUsed <= this.serveBufferBytes || key === sha256) break
      this.serveBuffer.delete(key)
      this.serveBufferUsed -= value.byteLength
      this.retire(value)
    }
    return true
  }

  private dropServeBuffer (sha256: string): void {
    const bytes = this.serveBuffer.get(sha256)
    if (bytes === undefined) return
    this.serveBuffer.delete(sha256)
    this.serveBufferUsed -= bytes.byteLength
    this.retire(bytes)
  }

  /** A serve buffer left memory: back to the pool if it came from there, once no answer holds it. */
  private retire (bytes: Buffer): void {
    if (!this.buffers.owns(bytes)) return
    if (this.lent.has(bytes.buffer as ArrayBuffer)) this.retiredWhileLent.add(bytes.buffer as ArrayBuffer)
    else this.buffers.release(bytes)
  }

  /**
   * Reads a chunk into `target` (at least the chunk's length) and returns
   * the view of it that holds the chunk, checking its hash only if this
   * process has not checked these bytes before: for callers that read many
   * chunks in a row without a buffer per chunk (assembly).
   */
  async readInto (sha256: string, target: Buffer): Promise<Buffer> {
    const size = this.sizes.get(sha256)
    if (size === undefined) throw new ContentNotFoundError(sha256)
    if (size > target.byteLength) throw new RangeError(`chunk ${sha256} has ${size} bytes, more than the ${target.byteLength} given`)
    const bytes = target.subarray(0, size)
    let handle
    try {
      handle = await open(this.content.pathOf(sha256), 'r')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        this.forget(sha256)
        throw new ContentNotFoundError(sha256)
      }
      throw error
    }
    try {
      let read = 0
      while (read < size) {
        const { bytesRead } = await handle.read(bytes, read, size - read, read)
        if (bytesRead === 0) break
        read += bytesRead
      }
      const stat = await handle.stat()
      if (read !== size || stat.size !== size) {
        this.forget(sha256)
        throw new HashMismatchError(sha256, `${stat.size} bytes instead of ${size}`, `cached chunk ${sha256}`)
      }
    } finally {
      await handle.close()
    }
    if (!this.verified.has(sha256)) {
      const actual = createHash('sha256').update(bytes).digest('hex')
      if (actual !== sha256) {
        this.forget(sha256)
        throw new HashMismatchError(sha256, actual, `cached chunk ${sha256}`)
      }
      this.verified.add(sha256)
    }
    return bytes
  }

  stats (): CacheStats {
    const pinned = new Set<string>()
    for (const packageId of this.pins.keys()) for (const sha256 of this.packages.get(packageId)?.chunks ?? []) pinned.add(sha256)
    let pinnedBytes = 0
    for (const sha256 of pinned) pinnedBytes += this.sizes.get(sha256) ?? 0
    return { usedBytes: this.usedBytes, limitBytes: this.maxBytes, pinnedBytes, packages: this.packages.size }
  }

  /** Evicts until the cache is within its bound: orphan chunks first, then the least recently used unpinned packages. */
  async enforceLimit (): Promise<void> {
    this.evicting ??= (async () => {
      try {
        if (this.usedBytes > this.maxBytes) await this.evict(false)
      } finally {
        this.evicting = undefined
      }
    })()
    await this.evicting
  }

  /** Removes every package no task needs, and chunks of no known package. Returns the bytes freed. */
  async clear (): Promise<number> {
    await this.evicting
    const before = this.usedBytes
    await this.evict(true)
    return before - this.usedBytes
  }

  private async evict (everything: boolean): Promise<void> {
    const pinnedChunks = new Set<string>()
    for (const packageId of this.pins.keys()) for (const sha256 of this.packages.get(packageId)?.chunks ?? []) pinnedChunks.add(sha256)
    const known = new Set<string>()
    for (const pkg of this.packages.values()) for (const sha256 of pkg.chunks) known.add(sha256)
    const enough = (): boolean => !everything && this.usedBytes <= this.maxBytes
    for (const sha256 of [...this.sizes.keys()]) {
      if (enough()) return
      if (!known.has(sha256)) await this.deleteChunk(sha256)
    }
    const candidates = [...this.packages.values()].filter(pkg => !this.pins.has(pkg.id)).sort((a, b) => a.lastUsedAt - b.lastUsedAt)
    for (const pkg of candidates) {
      if (enough()) break
      for (const sha256 of pkg.chunks) if (!pinnedChunks.has(sha256)) await this.deleteChunk(sha256)
      this.packages.delete(pkg.id)
      this.emit('evicted', pkg.id)
    }
    this.save()
  }

  private async deleteChunk (sha256: string): Promise<void> {
    if (!this.sizes.has(sha256)) return
    await this.content.delete(sha256)
    this.forget(sha256)
  }

  /** Writes the package index; writes are serialized and atomic. */
  private save (): void {
    this.saving = this.saving.then(async () => {
      const document = { version: 1, packages: [...this.packages.values()] }
      const temporary = `${this.indexPath}.tmp`
      await writeFile(temporary, JSON.stringify(document))
      await rename(temporary, this.indexPath)
    }).catch(() => {})
  }

  async flush (): Promise<void> {
    await this.saving
  }
}
