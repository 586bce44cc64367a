import { createHash } from 'node:crypto'
import { open, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { HashMismatchError, sanitizeFileName, type ManifestPackage } from '../../protocol/index.js'
import type { ChunkCache } from '../cache.js'
import { CachedChunksCorruptError } from '../errors.js'

/**
 * Writes the package file from its cached chunks and checks the whole file's
 * SHA-256; the file gets its name only when it is whole and right. One pass:
 * each chunk is read into one reused buffer, hashed into the whole file's
 * hash and written; chunks this agent hashed earlier are not hashed again on
 * their own (the whole file's hash covers them). When the file does not
 * match, every chunk is checked again and those that fail are dropped.
 * Chunks that fail their hash end it with CachedChunksCorruptError, so that
 * the caller fetches exactly them again.
 */
export async function assemblePackage (pkg: ManifestPackage, cache: ChunkCache, workDir: string, signal?: AbortSignal): Promise<string> {
  const target = join(workDir, sanitizeFileName(pkg.fileName))
  const partial = `${target}.partial`
  const hash = createHash('sha256')
  const handle = await open(partial, 'w', 0o600)
  const buffer = cache.buffers.acquire(pkg.chunkSizeBytes)
  try {
    let position = 0
    for (const sha256 of pkg.chunks) {
      signal?.throwIfAborted()
      let bytes: Buffer
      try {
        bytes = await cache.readInto(sha256, buffer)
      } catch (error) {
        // A chunk not checked by this process yet (stored before a restart) failed its hash: the cache dropped it.
        if (error instanceof HashMismatchError) throw new CachedChunksCorruptError([sha256], { cause: error })
        throw error
      }
      hash.update(bytes)
      let written = 0
      while (written < bytes.byteLength) {
        const { bytesWritten } = await handle.write(bytes, written, bytes.byteLength - written, position + written)
        written += bytesWritten
      }
      position += bytes.byteLength
    }
  } catch (error) {
    await handle.close()
    await rm(partial, { force: true })
    throw error
  } finally {
    cache.buffers.release(buffer)
  }
  await handle.close()
  const actual = hash.digest('hex')
  if (actual !== pkg.sha256) {
    await rm(partial, { force: true })
    const bad = await cache.recheck(pkg.chunks)
    const mismatch = new HashMismatchError(pkg.sha256, actual, 'package file')
    if (bad.length > 0) throw new CachedChunksCorruptError(bad, { cause: mismatch })
    throw mismatch
  }
  await rename(partial, target)
  return target
}
