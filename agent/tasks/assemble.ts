import { createHash } from 'node:crypto'
import { open, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { HashMismatchError, sanitizeFileName, type ManifestPackage } from '../../protocol/index.js'
import type { ChunkCache } from '../cache.js'

/**
 * Writes the package file from its cached chunks and checks the whole file's
 * SHA-256; the file gets its name only when it is whole and right. Chunks
 * this agent hashed earlier are not hashed again on the way (the whole
 * file's hash covers them); when the file does not match, every chunk is
 * checked again and those that fail are dropped, so the next attempt fetches
 * exactly them.
 */
export async function assemblePackage (pkg: ManifestPackage, cache: ChunkCache, workDir: string, signal?: AbortSignal): Promise<string> {
  const target = join(workDir, sanitizeFileName(pkg.fileName))
  const partial = `${target}.partial`
  const hash = createHash('sha256')
  const handle = await open(partial, 'w', 0o600)
  try {
    for (const sha256 of pkg.chunks) {
      signal?.throwIfAborted()
      const bytes = await cache.read(sha256)
      hash.update(bytes)
      await handle.write(bytes)
    }
  } catch (error) {
    await handle.close()
    await rm(partial, { force: true })
    throw error
  }
  await handle.close()
  const actual = hash.digest('hex')
  if (actual !== pkg.sha256) {
    await rm(partial, { force: true })
    const bad = await cache.recheck(pkg.chunks)
    throw new HashMismatchError(pkg.sha256, actual, `package file${bad.length > 0 ? ` (${bad.length} stored chunk(s) failed their hash and were dropped)` : ''}`)
  }
  await rename(partial, target)
  return target
}
