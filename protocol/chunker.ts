import { createHash, type Hash } from 'node:crypto'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { DEFAULT_CHUNK_SIZE_BYTES, MAX_CHUNK_SIZE_BYTES, MIN_CHUNK_SIZE_BYTES } from './limits.js'
import { TooLargeError } from './errors.js'

export interface Chunk {
  index: number
  bytes: Buffer
  /** SHA-256 of the chunk, hex. */
  sha256: string
}

export interface ChunkerInit {
  /** @default DEFAULT_CHUNK_SIZE_BYTES (1 MiB) */
  chunkSizeBytes?: number
  /** Refuse input beyond this size. @default no limit */
  maxSizeBytes?: number
  /** Receives each chunk in order; the chunker waits for it, which gives backpressure. */
  onChunk: (chunk: Chunk) => Promise<void> | void
}

export interface ChunkingResult {
  sizeBytes: number
  chunkSizeBytes: number
  sha256: string
  chunks: string[]
}

/**
 * A writable stream that cuts its input into fixed-size chunks, hashing each
 * chunk and the whole input with SHA-256. It holds one chunk in memory at a
 * time whatever the input size, and does not accept more input until the
 * sink has taken the previous chunk.
 */
export class Chunker extends Writable {
  readonly chunkSizeBytes: number
  private readonly maxSizeBytes: number
  private readonly onChunk: ChunkerInit['onChunk']
  private readonly whole: Hash = createHash('sha256')
  private buffer: Buffer
  private filled = 0
  private index = 0
  private sizeBytes = 0
  private readonly hashes: string[] = []
  private finished?: ChunkingResult

  constructor (init: ChunkerInit) {
    super({ highWaterMark: 64 * 1024 })
    this.chunkSizeBytes = init.chunkSizeBytes ?? DEFAULT_CHUNK_SIZE_BYTES
    if (!Number.isInteger(this.chunkSizeBytes) || this.chunkSizeBytes < MIN_CHUNK_SIZE_BYTES || this.chunkSizeBytes > MAX_CHUNK_SIZE_BYTES) {
      throw new RangeError(`chunk size must be between ${MIN_CHUNK_SIZE_BYTES} and ${MAX_CHUNK_SIZE_BYTES} bytes`)
    }
    this.maxSizeBytes = init.maxSizeBytes ?? Number.POSITIVE_INFINITY
    this.onChunk = init.onChunk
    this.buffer = Buffer.allocUnsafe(this.chunkSizeBytes)
  }

  /** The result, available once the stream has finished. */
  get result (): ChunkingResult {
    if (this.finished === undefined) throw new Error('the chunker has not finished')
    return this.finished
  }

  override _write (data: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.sizeBytes += data.byteLength
    if (this.sizeBytes > this.maxSizeBytes) {
      callback(new TooLargeError('package', this.maxSizeBytes))
      return
    }
    this.whole.update(data)
    this.consume(data, 0).then(() => { callback() }, callback)
  }

  private async consume (data: Buffer, start: number): Promise<void> {
    let offset = start
    while (offset < data.byteLength) {
      const take = Math.min(this.chunkSizeBytes - this.filled, data.byteLength - offset)
      data.copy(this.buffer, this.filled, offset, offset + take)
      this.filled += take
      offset += take
      if (this.filled === this.chunkSizeBytes) await this.emitChunk()
    }
  }

  private async emitChunk (): Promise<void> {
    const bytes = this.buffer.subarray(0, this.filled)
    const sha256 = createHash('sha256').update(bytes).digest('hex')
    const chunk = { index: this.index, bytes, sha256 }
    this.hashes.push(sha256)
    this.index += 1
    await this.onChunk(chunk)
    // The sink has finished with the bytes; a fresh buffer keeps any view it retained valid.
    this.buffer = Buffer.allocUnsafe(this.chunkSizeBytes)
    this.filled = 0
  }

  override _final (callback: (error?: Error | null) => void): void {
    const last = this.filled > 0 ? this.emitChunk() : Promise.resolve()
    last.then(() => {
      this.finished = {
        sizeBytes: this.sizeBytes,
        chunkSizeBytes: this.chunkSizeBytes,
        sha256: this.whole.digest('hex'),
        chunks: this.hashes
      }
      callback()
    }, callback)
  }
}

/** Chunks a readable stream and resolves with the chunk list. */
export async function chunkStream (input: NodeJS.ReadableStream, init: ChunkerInit): Promise<ChunkingResult> {
  const chunker = new Chunker(init)
  await pipeline(input, chunker)
  return chunker.result
}
