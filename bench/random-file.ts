import { createCipheriv, randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'

const BLOCK_BYTES = 8 * 1024 * 1024

/**
 * Writes a file of incompressible bytes in which no two chunks are alike,
 * whatever the chunk size: an AES-CTR keystream under a random key, which
 * is fast enough for gigabytes (a block of randomBytes repeated with a
 * varied header would repeat every chunk but the first of each block, and
 * the content-addressed stores would quietly deduplicate them).
 */
export async function writeRandomFile (path: string, sizeBytes: number): Promise<void> {
  const keystream = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16))
  const zeros = Buffer.alloc(BLOCK_BYTES)
  const out = createWriteStream(path)
  for (let written = 0; written < sizeBytes; written += BLOCK_BYTES) {
    const block = keystream.update(zeros.subarray(0, Math.min(BLOCK_BYTES, sizeBytes - written)))
    if (!out.write(block)) await new Promise<void>(resolve => out.once('drain', () => { resolve() }))
  }
  await new Promise<void>((resolve, reject) => { out.end((error?: Error | null) => { if (error != null) reject(error); else resolve() }) })
}
