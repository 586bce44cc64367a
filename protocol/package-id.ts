import { createHash } from 'node:crypto'
import { fromHex, utf8 } from './encoding.js'

export interface ChunkList {
  sizeBytes: number
  chunkSizeBytes: number
  /** SHA-256 of the whole file, hex. */
  sha256: string
  /** SHA-256 of each chunk in order, hex. */
  chunks: readonly string[]
}

const PACKAGE_ID_DOMAIN = 'meshdeploy/package/v1'

/**
 * A package's id is the SHA-256 of its chunk list, so a manifest cannot pair a
 * package id with chunks of another package (a mix-and-match attack): the
 * agent recomputes the id from the list it was given.
 */
export function packageIdOf (list: ChunkList): string {
  const hash = createHash('sha256')
  const header = Buffer.alloc(12)
  header.writeBigUInt64BE(BigInt(list.sizeBytes), 0)
  header.writeUInt32BE(list.chunkSizeBytes, 8)
  hash.update(utf8(PACKAGE_ID_DOMAIN)).update(header).update(fromHex(list.sha256))
  for (const chunk of list.chunks) hash.update(fromHex(chunk))
  return hash.digest('hex')
}

/** Number of chunks a file of `sizeBytes` has; an empty file has none. */
export function chunkCountOf (sizeBytes: number, chunkSizeBytes: number): number {
  return Math.ceil(sizeBytes / chunkSizeBytes)
}

/** Size of chunk `index`: every chunk is full but the last. */
export function chunkLengthOf (list: Pick<ChunkList, 'sizeBytes' | 'chunkSizeBytes'>, index: number): number {
  const start = index * list.chunkSizeBytes
  return Math.max(0, Math.min(list.chunkSizeBytes, list.sizeBytes - start))
}
