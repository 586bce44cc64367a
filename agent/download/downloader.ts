import { setTimeout as sleep } from 'node:timers/promises'
import pLimit from 'p-limit'
import { chunkLengthOf, describeError, HashMismatchError, type ManifestPackage } from '../../protocol/index.js'
import type { ChunkCache } from '../cache.js'
import { ChunkUnavailableError } from '../errors.js'
import type { ChunkOrigin } from './origin-source.js'
import type { TokenBucket } from './token-bucket.js'

export interface DownloadProgress {
  bytesTotal: number
  /** Bytes of the package held in the cache, verified. */
  bytesDone: number
  chunksTotal: number
  chunksDone: number
  /** Bytes received in this run, by source. */
  bytesFromPeers: number
  bytesFromOrigin: number
}

export interface DownloaderInit {
  pkg: ManifestPackage
  cache: ChunkCache
  origin: ChunkOrigin
  /** Caps the device's download rate across every source. */
  bucket?: TokenBucket
  /** Chunks fetched at once. @default 4 */
  concurrency?: number
  /** Attempts per chunk before the download fails. @default 3 */
  attemptsPerChunk?: number
  onProgress?: (progress: DownloadProgress) => void
  /** Called after a chunk is verified and stored. */
  onChunkStored?: (index: number) => void
  signal: AbortSignal
}

/** What the task runner needs to bring a package into the cache; the agent decides where bytes come from. */
export interface FetchPackageOptions {
  taskId: string
  pkg: ManifestPackage
  /** Caps the device's download rate across every source. */
  bucket?: TokenBucket
  onProgress?: (progress: DownloadProgress) => void
  signal: AbortSignal
}

export type PackageFetcher = (options: FetchPackageOptions) => Promise<DownloadProgress>

export const DEFAULT_DOWNLOAD_CONCURRENCY = 4
const DEFAULT_ATTEMPTS_PER_CHUNK = 3
const RETRY_PAUSE_MS = 250

/**
 * Brings every chunk of a package into the cache. Chunks already there (a
 * restart, another task with the same content) are not fetched again; every
 * fetched chunk is hashed before it is stored.
 */
export async function downloadPackage (init: DownloaderInit): Promise<DownloadProgress> {
  const { pkg, cache } = init
  const progress: DownloadProgress = {
    bytesTotal: pkg.sizeBytes,
    bytesDone: 0,
    chunksTotal: pkg.chunks.length,
    chunksDone: 0,
    bytesFromPeers: 0,
    bytesFromOrigin: 0
  }
  const missing: number[] = []
  for (const [index, sha256] of pkg.chunks.entries()) {
    if (await cache.has(sha256)) {
      progress.chunksDone++
      progress.bytesDone += chunkLengthOf(pkg, index)
    } else {
      missing.push(index)
    }
  }
  init.onProgress?.({ ...progress })
  const limit = pLimit(init.concurrency ?? DEFAULT_DOWNLOAD_CONCURRENCY)
  const attempts = init.attemptsPerChunk ?? DEFAULT_ATTEMPTS_PER_CHUNK
  const failure = new AbortController()
  const signal = AbortSignal.any([init.signal, failure.signal])

  const fetchOne = async (index: number): Promise<void> => {
    const request = { index, sha256: pkg.chunks[index], lengthBytes: chunkLengthOf(pkg, index) }
    let lastError: unknown
    for (let attempt = 1; attempt <= attempts; attempt++) {
      signal.throwIfAborted()
      try {
        const options = init.bucket !== undefined ? { signal, bucket: init.bucket, buffers: cache.buffers } : { signal, buffers: cache.buffers }
        // The origin checked the bytes against the manifest's hash: stored without a second hash, the buffer the cache's.
        const bytes = await init.origin.fetchChunk(request, options)
        await cache.put(bytes, request.sha256, { hashedByCaller: true, pooled: true })
        progress.bytesFromOrigin += bytes.byteLength
        progress.bytesDone += bytes.byteLength
        progress.chunksDone++
        init.onChunkStored?.(index)
        init.onProgress?.({ ...progress })
        return
      } catch (error) {
        if (signal.aborted) throw error
        lastError = error
        if (attempt < attempts) await sleep(RETRY_PAUSE_MS * attempt, undefined, { signal })
      }
    }
    const reason = lastError instanceof HashMismatchError
      ? `chunk ${index} failed its hash check ${attempts} times (${describeError(lastError)})`
      : `chunk ${index} could not be fetched: ${describeError(lastError)}`
    throw new ChunkUnavailableError(index, reason, { cause: lastError })
  }

  try {
    await Promise.all(missing.map(async index => await limit(async () => {
      try {
        await fetchOne(index)
      } catch (error) {
        failure.abort(error)
        throw error
      }
    })))
  } catch (error) {
    limit.clearQueue()
    throw failure.signal.aborted && !init.signal.aborted ? failure.signal.reason : error
  }
  return progress
}
