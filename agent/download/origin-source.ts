import { createHash } from 'node:crypto'
import { HashMismatchError } from '../../protocol/index.js'
import type { CoordinatorClient } from '../coordinator-client.js'
import type { RefusalLog } from '../refusals.js'
import { take, type TokenBucket } from './token-bucket.js'

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
}

/** Where chunks come from when no peer has them. The bytes returned have been checked against `request.sha256`. */
export interface ChunkOrigin {
  fetchChunk: (request: ChunkRequest, options: FetchOptions) => Promise<Buffer>
}

/**
 * The coordinator's HTTP origin as a chunk source. With a bandwidth cap the
 * chunk is fetched as byte ranges no larger than the bucket's burst, each
 * requested only once the bucket has granted it, so the bytes on the wire
 * follow the cap and not only the bytes read.
 */
export class OriginSource implements ChunkOrigin {
  /** @param refusals where a chunk that fails its hash is logged */
  constructor (private readonly client: CoordinatorClient, private readonly refusals?: RefusalLog) {}

  async fetchChunk (request: ChunkRequest, options: FetchOptions): Promise<Buffer> {
    let bytes: Buffer
    if (options.bucket === undefined || request.lengthBytes <= options.bucket.pieceBytes) {
      if (options.bucket !== undefined) await take(options.bucket, request.lengthBytes, options.signal)
      bytes = await this.client.fetchContent(request.sha256, undefined, request.lengthBytes, { signal: options.signal, onData: options.onBytes })
    } else {
      const pieces: Buffer[] = []
      const bucket = options.bucket
      const endOf = (start: number): number => Math.min(request.lengthBytes, start + bucket.pieceBytes)
      let grant = take(bucket, endOf(0), options.signal)
      for (let start = 0; start < request.lengthBytes; start += bucket.pieceBytes) {
        await grant
        const end = endOf(start)
        const piece = this.client.fetchContent(request.sha256, { start, end }, end - start, { signal: options.signal, onData: options.onBytes })
        // The next range is reserved while this one travels: the bucket's wait and the request's latency overlap.
        const next = end
        grant = next < request.lengthBytes ? take(bucket, endOf(next) - next, options.signal) : Promise.resolve()
        try {
          pieces.push(await piece)
        } catch (error) {
          bucket.refund(end - start)
          if (next < request.lengthBytes) void grant.then(() => { bucket.refund(endOf(next) - next) }, () => {})
          throw error
        }
      }
      bytes = Buffer.concat(pieces)
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
}
