import type { Uint8ArrayList } from 'uint8arraylist'
import { MAX_CHUNKS_PER_PACKAGE } from '../../../protocol/index.js'
import { MalformedHaveMessageError } from './errors.js'

/**
 * Messages of the have/interest protocol, per package:
 * - `interested`: I am downloading this package; here is what I hold. Peers
 *   answer with their `bitfield` and send me `have` as they store chunks.
 * - `bitfield`: what I hold (the answer to `interested`).
 * - `have`: I stored this chunk (verified).
 * - `haves`: I stored these chunks: the `have`s of a batching interval in one
 *   message (readers hand them on as single `have`s).
 * - `fetching`: I am fetching this chunk from the origin (the elected peer
 *   says so, so that the others wait for it).
 * - `not-interested`: I stopped downloading (done or withdrawn); I still
 *   serve what I announced.
 */
export type HaveMessage =
  | { type: 'interested', packageId: string, chunkCount: number, bits: Uint8Array }
  | { type: 'bitfield', packageId: string, chunkCount: number, bits: Uint8Array }
  | { type: 'have', packageId: string, index: number }
  | { type: 'haves', packageId: string, indices: number[] }
  | { type: 'fetching', packageId: string, index: number }
  | { type: 'not-interested', packageId: string }

const TYPE_CODES = { interested: 1, bitfield: 2, have: 3, fetching: 4, 'not-interested': 5, haves: 6 } as const
const CODE_TYPES = new Map(Object.entries(TYPE_CODES).map(([type, code]) => [code, type as HaveMessage['type']]))
const PACKAGE_ID_BYTES = 32
/** Chunk indices in one `haves` message: it stays within the largest message. */
export const MAX_HAVES_PER_MESSAGE = 16_384

export function bitfieldBytes (chunkCount: number): number {
  return Math.ceil(chunkCount / 8)
}

export function encodeHaveMessage (message: HaveMessage): Uint8Array {
  if (message.type === 'haves' && (message.indices.length === 0 || message.indices.length > MAX_HAVES_PER_MESSAGE)) {
    throw new RangeError(`a haves message carries 1 to ${MAX_HAVES_PER_MESSAGE} indices, not ${message.indices.length}`)
  }
  const extra = message.type === 'interested' || message.type === 'bitfield'
    ? 4 + message.bits.byteLength
    : message.type === 'not-interested' ? 0 : message.type === 'haves' ? 4 * message.indices.length : 4
  const out = new Uint8Array(1 + PACKAGE_ID_BYTES + extra)
  const view = new DataView(out.buffer)
  out[0] = TYPE_CODES[message.type]
  out.set(Buffer.from(message.packageId, 'hex'), 1)
  const at = 1 + PACKAGE_ID_BYTES
  if (message.type === 'interested' || message.type === 'bitfield') {
    view.setUint32(at, message.chunkCount)
    out.set(message.bits, at + 4)
  } else if (message.type === 'have' || message.type === 'fetching') {
    view.setUint32(at, message.index)
  } else if (message.type === 'haves') {
    for (const [i, index] of message.indices.entries()) view.setUint32(at + 4 * i, index)
  }
  return out
}

/** Decodes one message; throws MalformedHaveMessageError on anything out of shape. */
export function decodeHaveMessage (frame: Uint8Array | Uint8ArrayList): HaveMessage {
  const bytes = frame instanceof Uint8Array ? frame : frame.subarray()
  if (bytes.byteLength < 1 + PACKAGE_ID_BYTES) throw new MalformedHaveMessageError(`a message of ${bytes.byteLength} bytes is too short`)
  const type = CODE_TYPES.get(bytes[0] as 1)
  if (type === undefined) throw new MalformedHaveMessageError(`unknown message type ${bytes[0]}`)
  const packageId = Buffer.from(bytes.subarray(1, 1 + PACKAGE_ID_BYTES)).toString('hex')
  const rest = bytes.subarray(1 + PACKAGE_ID_BYTES)
  const view = new DataView(rest.buffer, rest.byteOffset, rest.byteLength)
  switch (type) {
    case 'not-interested':
      if (rest.byteLength !== 0) throw new MalformedHaveMessageError('not-interested carries nothing')
      return { type, packageId }
    case 'haves': {
      if (rest.byteLength === 0 || rest.byteLength % 4 !== 0 || rest.byteLength / 4 > MAX_HAVES_PER_MESSAGE) {
        throw new MalformedHaveMessageError(`haves carries 1 to ${MAX_HAVES_PER_MESSAGE} 4-byte indices, not ${rest.byteLength} bytes`)
      }
      const indices: number[] = []
      for (let at = 0; at < rest.byteLength; at += 4) {
        const index = view.getUint32(at)
        if (index >= MAX_CHUNKS_PER_PACKAGE) throw new MalformedHaveMessageError(`chunk index ${index} is out of range`)
        indices.push(index)
      }
      return { type, packageId, indices }
    }
    case 'have':
    case 'fetching': {
      if (rest.byteLength !== 4) throw new MalformedHaveMessageError(`${type} carries a 4-byte index`)
      const index = view.getUint32(0)
      if (index >= MAX_CHUNKS_PER_PACKAGE) throw new MalformedHaveMessageError(`chunk index ${index} is out of range`)
      return { type, packageId, index }
    }
    default: {
      if (rest.byteLength < 4) throw new MalformedHaveMessageError(`${type} carries a chunk count`)
      const chunkCount = view.getUint32(0)
      if (chunkCount > MAX_CHUNKS_PER_PACKAGE) throw new MalformedHaveMessageError(`${chunkCount} chunks is more than a package may have`)
      if (rest.byteLength !== 4 + bitfieldBytes(chunkCount)) throw new MalformedHaveMessageError(`a bitfield of ${chunkCount} chunks is ${bitfieldBytes(chunkCount)} bytes, not ${rest.byteLength - 4}`)
      const bits = rest.slice(4)
      // Bits past the last chunk are ignored, not trusted.
      if (chunkCount % 8 !== 0) bits[bits.byteLength - 1] &= (0xff << (8 - chunkCount % 8)) & 0xff
      return { type, packageId, chunkCount, bits }
    }
  }
}
