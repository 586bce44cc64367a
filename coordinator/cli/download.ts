import { createHash } from 'node:crypto'
import { open, rename, rm } from 'node:fs/promises'
import pLimit from 'p-limit'
import { HashMismatchError, chunkLengthOf } from '../../protocol/index.js'
import type { ApiClient } from './api-client.js'

export interface DownloadedPackage {
  file: string
  sizeBytes: number
  sha256: string
}

/**
 * Downloads a package from the coordinator's origin into a file: chunks are
 * fetched a few at a time, each checked against the package's chunk list,
 * written at its place, and the whole file's SHA-256 is checked before the
 * file gets its name. Nothing half-written is ever left under that name.
 */
export async function downloadPackageFile (client: ApiClient, packageId: string, out: string, onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<DownloadedPackage> {
  const pkg = await client.get(`/v1/packages/${packageId}?chunks=true`) as { sizeBytes: number, chunkSizeBytes: number, sha256: string, chunks: string[] }
  const partial = `${out}.partial`
  const handle = await open(partial, 'w', 0o644)
  let done = 0
  try {
    const limit = pLimit(4)
    await Promise.all(pkg.chunks.map(async (sha256, index) => await limit(async () => {
      const length = chunkLengthOf(pkg, index)
      const bytes = await client.getBytes(`/v1/content/${sha256}`, length, received => {
        done += received
        onProgress?.(done, pkg.sizeBytes)
      })
      const actual = createHash('sha256').update(bytes).digest('hex')
      if (actual !== sha256) throw new HashMismatchError(sha256, actual, `chunk ${index}`)
      await handle.write(bytes, 0, bytes.byteLength, index * pkg.chunkSizeBytes)
    })))
    await handle.sync()
  } catch (error) {
    await handle.close()
    await rm(partial, { force: true })
    throw error
  }
  await handle.close()
  const whole = createHash('sha256')
  const reader = await open(partial, 'r')
  try {
    for await (const piece of reader.createReadStream()) whole.update(piece as Buffer)
  } finally {
    await reader.close()
  }
  const actual = whole.digest('hex')
  if (actual !== pkg.sha256) {
    await rm(partial, { force: true })
    throw new HashMismatchError(pkg.sha256, actual, 'package file')
  }
  await rename(partial, out)
  return { file: out, sizeBytes: pkg.sizeBytes, sha256: pkg.sha256 }
}
