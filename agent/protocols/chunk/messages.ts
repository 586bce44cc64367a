import type { Uint8ArrayList } from 'uint8arraylist'
import { MAX_CHUNKS_PER_PACKAGE, MAX_CHUNK_SIZE_BYTES } from '../../../protocol/index.js'
import { HEADER_BYTES, MAX_PIECE_BYTES, MAX_RETRY_AFTER_MS, REQUEST_BYTES } from './constants.js'
import { MalformedPieceMessageError } from './errors.js'

export interface PieceRequest {
  packageId: string
  index: number
  offsetBytes: number
  lengthBytes: number
}

/**
 * `not-cached`: the peer does not hold it; `busy`: too many uploads;
 * `invalid`: out of range; `refused`: not for this peer; `rate-limited`: the
 * requester is over its request budget and may ask again after the time the
 * header carries.
 */
export const PIECE_STATUSES = ['ok', 'not-cached', 'busy', 'invalid', 'refused', 'rate-limited'] as const
export type PieceStatus = typeof PIECE_STATUSES[number]

/** An answer's header: the length that follows (`ok`), or when to ask again (`rate-limited`). */
export interface PieceHeader {
  status: PieceStatus
  lengthBytes: number
  retryAfterMs?: number
}

export function encodePieceRequest (request: PieceRequest): Uint8Array {
  const out = new Uint8Array(REQUEST_BYTES)
  const view = new DataView(out.buffer)
  out.set(Buffer.from(request.packageId, 'hex'), 0)
  view.setUint32(32, request.index)
  view.setUint32(36, request.offsetBytes)
  view.setUint32(40, request.lengthBytes)
  return out
}

export function decodePieceRequest (frame: Uint8Array | Uint8ArrayList): PieceRequest {
  const bytes = frame instanceof Uint8Array ? frame : frame.subarray()
  if (bytes.byteLength !== REQUEST_BYTES) throw new MalformedPieceMessageError(`a request is ${REQUEST_BYTES} bytes, not ${bytes.byteLength}`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const request: PieceRequest = {
    packageId: Buffer.from(bytes.subarray(0, 32)).toString('hex'),
    index: view.getUint32(32),
    offsetBytes: view.getUint32(36),
    lengthBytes: view.getUint32(40)
  }
  if (request.index >= MAX_CHUNKS_PER_PACKAGE) throw new MalformedPieceMessageError(`chunk index ${request.index} is out of range`)
  if (request.lengthBytes === 0 || request.lengthBytes > MAX_PIECE_BYTES) throw new MalformedPieceMessageError(`a piece is 1 to ${MAX_PIECE_BYTES} bytes, not ${request.lengthBytes}`)
  if (request.offsetBytes + request.lengthBytes > MAX_CHUNK_SIZE_BYTES) throw new MalformedPieceMessageError('the piece reaches past the largest chunk')
  return request
}

/** The header's 4-byte field is the length that follows for `ok`, the wait in ms for `rate-limited`, and 0 otherwise. */
export function encodePieceHeader (status: PieceStatus, value: number): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES)
  out[0] = PIECE_STATUSES.indexOf(status)
  new DataView(out.buffer).setUint32(1, value)
  return out
}

export function decodePieceHeader (frame: Uint8Array | Uint8ArrayList): PieceHeader {
  const bytes = frame instanceof Uint8Array ? frame : frame.subarray()
  if (bytes.byteLength !== HEADER_BYTES) throw new MalformedPieceMessageError(`an answer header is ${HEADER_BYTES} bytes, not ${bytes.byteLength}`)
  const status = PIECE_STATUSES[bytes[0]]
  if (status === undefined) throw new MalformedPieceMessageError(`unknown answer status ${bytes[0]}`)
  const value = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1)
  if (status === 'rate-limited') {
    if (value > MAX_RETRY_AFTER_MS) throw new MalformedPieceMessageError(`a wait of ${value} ms is longer than a peer may ask for`)
    return { status, lengthBytes: 0, retryAfterMs: value }
  }
  if (status !== 'ok' && value !== 0) throw new MalformedPieceMessageError(`a ${status} answer carries no length, not ${value}`)
  if (value > MAX_PIECE_BYTES) throw new MalformedPieceMessageError(`an answer of ${value} bytes is larger than a piece may be`)
  return { status, lengthBytes: value }
}
