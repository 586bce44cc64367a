import { createHash } from 'node:crypto'
import { HashMismatchError, TooLargeError } from '../../protocol/index.js'
import type { CoordinatorClient } from '../coordinator-client.js'
import { CoordinatorError } from '../errors.js'
import type { RefusalLog } from '../refusals.js'
import type { BufferPool } from './buffer-pool.js'
import { OriginLanes, type OriginLane, type OriginLanesInit } from './origin-lanes.js'
import { fetchPacedRanges } from './paced-ranges.js'
import type { TokenBucket } from './token-bucket.js'

/** Times a cut answer is resumed at once within one fetch, as long as each attempt brought bytes. */
export const DEFAULT_RESUMES_PER_FETCH = 4
/** Chunks whose received part is kept for a later fetch of the same chunk. */
export const DEFAULT_MAX_PARTIAL_CHUNKS = 16
/** Bytes of received parts kept in all. */
export const DEFAULT_MAX_PARTIAL_BYTES = 16 * 1024 * 1024

export interface ChunkRequest {
  index: number
  sha256: string
  lengthBytes: number
}

export interface FetchOptions {
  signal: AbortSignal
  /** Paces the transfer; absent: as fast as the link allows. */
  bucket?: TokenBucket
  /** Called as bytes arrive, for progress. */
  onBytes?: (bytes: number) => void
  /**
   * Where the chunk's buffer comes from: the bytes returned are then a
   * buffer of this pool, the caller's to give back. @default a new buffer
   */
  buffers?: BufferPool
}

/** Where chunks come from when no peer has them. The bytes returned have been checked against `request.sha256`. */
export interface ChunkOrigin {
  fetchChunk: (request: ChunkRequest, options: FetchOptions) => Promise<Buffer>
}

export interface OriginSourceInit {
  /** Where a chunk that fails its hash is logged. */
  refusals?: RefusalLog
  /**
   * Orders the chunks streaming from the origin (see OriginLanes); `false`
   * lets every fetch stream at once. @default one chunk at a time, 256 KiB overlap
   */
  lanes?: OriginLanesInit | false
  /** @default DEFAULT_RESUMES_PER_FETCH */
  resumesPerFetch?: number
  /** @default DEFAULT_MAX_PARTIAL_CHUNKS */
  maxPartialChunks?: number
  /** @default DEFAULT_MAX_PARTIAL_BYTES */
  maxPartialBytes?: number
}

/** What an origin source did, for tests and benchmarks. */
export interface OriginSourceStats {
  /** Answers cut short and resumed with a range from the first missing byte. */
  resumed: number
  /** Fetches that started from the part an earlier, failed fetch had received. */
  resumedFromPartial: number
  /** Bytes received in all (every answer, cut or not). */
  receivedBytes: number
}

/**
 * The coordinator's HTTP origin as a chunk source. With a bandwidth cap the
 * chunk is fetched as paced byte ranges (fetchPacedRanges), so the bytes on
 * the wire follow the cap and not only the bytes read.
 *
 * Bytes that crossed the WAN are not fetched again: an answer cut short
 * (a reset connection, a timeout, the coordinator restarting) is resumed
 * with a range request from the first missing byte, and a fetch that fails
 * keeps what it received for the next fetch of the same chunk. Content is
 * addressed by its hash, so a range of it never changes. Only a chunk that
 * fails its hash starts over from its first byte.
 */
export class OriginSource implements ChunkOrigin {
  private readonly refusals?: RefusalLog
  private readonly lanes?: OriginLanes
  private readonly resumesPerFetch: number
  private readonly maxPartialChunks: number
  private readonly maxPartialBytes: number
  /** Received prefixes of chunks whose fetch failed, oldest first (a Map keeps insertion order). */
  private readonly partials = new Map<string, Buffer>()
  private partialBytes = 0
  readonly stats: OriginSourceStats = { resumed: 0, resumedFromPartial: 0, receivedBytes: 0 }

  constructor (private readonly client: CoordinatorClient, init: OriginSourceInit | RefusalLog = {}) {
    const options: OriginSourceInit = isRefusalLog(init) ? { refusals: init } : init
    if (options.refusals !== undefined) this.refusals = options.refusals
    if (options.lanes !== false) this.lanes = new OriginLanes(options.lanes ?? {})
    this.resumesPerFetch = options.resumesPerFetch ?? DEFAULT_RESUMES_PER_FETCH
    this.maxPartialChunks = options.maxPartialChunks ?? DEFAULT_MAX_PARTIAL_CHUNKS
    this.maxPartialBytes = options.maxPartialBytes ?? DEFAULT_MAX_PARTIAL_BYTES
  }

  /** Bytes of chunks received in part and kept for a later fetch. */
  get partialBytesKept (): number {
    return this.partialBytes
  }

  async fetchChunk (request: ChunkRequest, options: FetchOptions): Promise<Buffer> {
    const lane = await this.lanes?.acquire(options.signal)
    // The chunk's bytes arrive in one buffer, range by range: no buffer per answer, no concatenation.
    let bytes: Buffer | undefined
    try {
      bytes = options.buffers?.acquire(request.lengthBytes) ?? Buffer.allocUnsafe(request.lengthBytes)
      return await this.fetchInto(request, bytes, options, lane)
    } catch (error) {
      if (bytes !== undefined) options.buffers?.release(bytes)
      throw error
    } finally {
      lane?.release()
    }
  }

  private async fetchInto (request: ChunkRequest, bytes: Buffer, options: FetchOptions, lane: OriginLane | undefined): Promise<Buffer> {
    const length = request.lengthBytes
    let received = this.takePartial(request, bytes)
    if (received > 0) this.stats.resumedFromPartial++
    lane?.remaining(length - received, length)
    const counted = (count: number): void => {
      received += count
      this.stats.receivedBytes += count
      lane?.remaining(length - received, length)
      options.onBytes?.(count)
    }
    // The bytes of [start, end) go to their place; a cut answer is resumed from its first missing byte.
    const ask = async (start: number, end: number): Promise<void> => {
      let from = start
      let resumes = 0
      for (;;) {
        const before = received
        try {
          const range = from === 0 && end === length ? undefined : { start: from, end }
          const answer = await this.client.fetchContent(request.sha256, range, end - from, { signal: options.signal, onData: counted, into: bytes.subarray(from, end) })
          if (answer.byteLength === end - from) return
          // An answer that ended early without an error: what arrived is kept, the rest asked for.
          if (answer.byteLength === 0) throw new CoordinatorError(502, 'short-answer', `the origin sent none of bytes ${from}-${end - 1} of chunk ${request.index}`)
        } catch (error) {
          const gained = received - before
          if (!resumable(error) || options.signal.aborted || gained === 0 || resumes >= this.resumesPerFetch) throw error
        }
        from += received - before
        resumes++
        this.stats.resumed++
      }
    }
    // The ranges cover what is still missing; a kept prefix is not asked for again.
    const offset = received
    try {
      await fetchPacedRanges({ lengthBytes: length - offset, ...(options.bucket !== undefined ? { bucket: options.bucket } : {}), signal: options.signal }, async (start, end) => { await ask(offset + start, offset + end) })
    } catch (error) {
      if (keepable(error)) this.keepPartial(request, bytes, received)
      throw error
    }
    const actual = createHash('sha256').update(bytes).digest('hex')
    if (actual !== request.sha256) {
      this.refusals?.refuse({
        subject: 'chunk',
        reason: 'hash-mismatch',
        index: request.index,
        message: `chunk ${request.index} from the origin fails its hash; it is asked again`,
        details: { source: 'origin', expected: request.sha256, actual }
      })
      throw new HashMismatchError(request.sha256, actual, `chunk ${request.index} from the origin`)
    }
    return bytes
  }

  /** Copies a kept prefix of the chunk into `bytes` and forgets it; returns its length. */
  private takePartial (request: ChunkRequest, bytes: Buffer): number {
    const kept = this.partials.get(request.sha256)
    if (kept === undefined) return 0
    this.partials.delete(request.sha256)
    this.partialBytes -= kept.byteLength
    if (kept.byteLength >= request.lengthBytes) return 0
    kept.copy(bytes, 0)
    return kept.byteLength
  }

  private keepPartial (request: ChunkRequest, bytes: Buffer, received: number): void {
    if (received <= 0 || received >= request.lengthBytes || received > this.maxPartialBytes) return
    // A copy: the chunk's buffer goes back to its pool with the failure.
    this.partials.set(request.sha256, Buffer.from(bytes.subarray(0, received)))
    this.partialBytes += received
    for (const [sha256, kept] of this.partials) {
      if (this.partials.size <= this.maxPartialChunks && this.partialBytes <= this.maxPartialBytes) break
      this.partials.delete(sha256)
      this.partialBytes -= kept.byteLength
    }
  }
}

function isRefusalLog (value: OriginSourceInit | RefusalLog): value is RefusalLog {
  return typeof (value as RefusalLog).refuse === 'function'
}

/** A failure after which the bytes already received are still good and the rest may be asked for at once. */
function resumable (error: unknown): boolean {
  if (error instanceof HashMismatchError || error instanceof TooLargeError) return false
  // An answer with an error status says nothing of a cut: asking again at once would meet the same answer.
  if (error instanceof CoordinatorError) return error.reason === 'short-answer'
  return true
}

/** A failure that leaves the received prefix of the chunk worth keeping for a later fetch. */
function keepable (error: unknown): boolean {
  return !(error instanceof HashMismatchError) && !(error instanceof TooLargeError)
}
