import type { Stream } from '@libp2p/interface'
import { FrameReader, encodeFrame, sendBytes } from '../frames.js'
import { HEADER_BYTES, IDLE_TIMEOUT_MS, MAX_DATA_FRAME_BYTES, MAX_PIECE_BYTES, MIN_PROGRESS_BYTES } from './constants.js'
import { MalformedPieceMessageError, PieceRefusedError, PieceStalledError } from './errors.js'
import { decodePieceHeader, encodePieceRequest, type PieceRequest } from './messages.js'

export * from './constants.js'
export * from './errors.js'
export * from './messages.js'
export { ChunkServer, type ChunkRefusalReason, type ChunkServerInit, type PieceSource } from './handler.js'
export { ChunkAdmission, type AdmissionDecision, type ChunkAdmissionInit } from './admission.js'

export interface RequestPieceOptions {
  signal: AbortSignal
  /** Longest an answer may go without progress. @default IDLE_TIMEOUT_MS */
  idleTimeoutMs?: number
  /** What counts as progress: this many bytes, or the rest of the piece. @default MIN_PROGRESS_BYTES */
  minProgressBytes?: number
  /** Sees bytes as they arrive, for progress. */
  onBytes?: (bytes: number) => void
  /**
   * Where the piece's bytes go (exactly its length), e.g. its place in a
   * pooled chunk buffer. @default a new buffer
   */
  into?: Uint8Array
}

/**
 * Asks a peer for one piece over a fresh stream and returns its bytes. The
 * answer must be exactly the length asked for. A refusal throws
 * PieceRefusedError; an answer that breaks the protocol (cut short, longer
 * than announced, a frame over its bound) MalformedPieceMessageError,
 * TruncatedFrameError or FrameTooLargeError; a reset stream
 * StreamResetError; an answer that makes too little progress
 * PieceStalledError. The caller checks the hash of the assembled chunk.
 * With `into`, the bytes are written there and it is returned.
 */
export async function requestPiece (stream: Stream, request: PieceRequest, options: RequestPieceOptions): Promise<Uint8Array> {
  const idleMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS
  const minProgressBytes = options.minProgressBytes ?? MIN_PROGRESS_BYTES
  // One idle timer, re-armed by progress, rather than a timeout signal per read.
  const idle = new AbortController()
  const timer = setTimeout(() => { idle.abort(new PieceStalledError(idleMs, minProgressBytes)) }, idleMs)
  const signal = AbortSignal.any([options.signal, idle.signal])
  let sinceProgress = 0
  try {
    const read = async (reader: FrameReader, remainingBytes: number): Promise<ReturnType<FrameReader['read']>> => {
      try {
        const frame = await reader.read({ signal })
        sinceProgress += frame?.byteLength ?? 0
        if (frame === null || sinceProgress >= Math.min(minProgressBytes, remainingBytes)) {
          timer.refresh()
          sinceProgress = 0
        }
        return frame
      } catch (error) {
        if (idle.signal.aborted && !options.signal.aborted) throw idle.signal.reason
        throw error
      }
    }
    await sendBytes(stream, encodeFrame(encodePieceRequest(request)), { signal: options.signal })
    await stream.close({ signal: options.signal })
    const reader = new FrameReader(stream, { maxFrameBytes: Math.max(MAX_DATA_FRAME_BYTES, HEADER_BYTES), maxBufferBytes: MAX_PIECE_BYTES + 64 * 1024 })
    const headerFrame = await read(reader, 0)
    if (headerFrame === null) throw new MalformedPieceMessageError('the peer closed the stream without an answer')
    const header = decodePieceHeader(headerFrame)
    if (header.status !== 'ok') throw new PieceRefusedError(header.status, header.retryAfterMs !== undefined ? { retryAfterMs: header.retryAfterMs } : {})
    if (header.lengthBytes !== request.lengthBytes) throw new MalformedPieceMessageError(`asked for ${request.lengthBytes} bytes, the peer announced ${header.lengthBytes}`)
    if (options.into !== undefined && options.into.byteLength !== header.lengthBytes) throw new RangeError(`the target holds ${options.into.byteLength} bytes, not the ${header.lengthBytes} of the piece`)
    const out = options.into ?? Buffer.allocUnsafe(header.lengthBytes)
    let received = 0
    while (received < header.lengthBytes) {
      const frame = await read(reader, header.lengthBytes - received)
      if (frame === null) throw new MalformedPieceMessageError(`the peer closed the stream after ${received} of ${header.lengthBytes} bytes`)
      if (received + frame.byteLength > header.lengthBytes) throw new MalformedPieceMessageError(`the peer sent more than the ${header.lengthBytes} bytes it announced`)
      for (const part of frame) {
        out.set(part, received)
        received += part.byteLength
      }
      options.onBytes?.(frame.byteLength)
    }
    return out
  } finally {
    clearTimeout(timer)
  }
}
