import type { AbortOptions, Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { take, type TokenBucket } from '../../download/token-bucket.js'
import { describeError } from '../../../protocol/index.js'
import { FrameReader, FrameTooLargeError, TruncatedFrameError, asError, encodeFrame, sendBytes } from '../frames.js'
import type { ChunkAdmission } from './admission.js'
import {
  DEFAULT_MAX_CONCURRENT_UPLOADS, MAX_DATA_FRAME_BYTES, REQUEST_BYTES, REQUEST_READ_TIMEOUT_MS, WRITE_TIMEOUT_MS
} from './constants.js'
import { MalformedPieceMessageError, PieceNotHeldError } from './errors.js'
import { decodePieceRequest, encodePieceHeader, type PieceRequest, type PieceStatus } from './messages.js'

/** Where served pieces come from; throws PieceNotHeldError for what it does not hold. */
export interface PieceSource {
  readPiece: (request: PieceRequest, options?: AbortOptions) => Promise<Uint8Array>
  /**
   * The answer that carried bytes of readPiece is done with them (sent, or
   * its stream aborted): a source that lends buffers may reuse them now.
   */
  donePiece?: (bytes: Uint8Array) => void
}

export interface ChunkServerInit {
  source: PieceSource
  /** Paces every upload of this agent together (`--upload-kbps`). */
  uploadBucket?: TokenBucket
  /** @default DEFAULT_MAX_CONCURRENT_UPLOADS */
  maxConcurrentUploads?: number
  /** @default REQUEST_READ_TIMEOUT_MS */
  requestReadTimeoutMs?: number
  /** @default WRITE_TIMEOUT_MS */
  writeTimeoutMs?: number
  /** Whether the remote peer may be served at all (a peer banned by a download is refused). */
  mayServe?: (remotePeer: string) => boolean
  /** Per-peer request budget; absent: none. */
  admission?: ChunkAdmission
  /** Bytes written to a peer, for accounting. */
  onUploaded?: (remotePeer: string, bytes: number) => void
  /** A request this agent refused, and why (the caller logs it). */
  onRefused?: (remotePeer: string, reason: ChunkRefusalReason, message: string) => void
  /** The peer kept asking while told to wait: the caller disconnects it. */
  onAbuse?: (remotePeer: string) => void
}

/** Why a request was refused, as the refusal log names it. */
export type ChunkRefusalReason = 'rate-limited' | 'malformed-request' | 'peer-not-allowed' | 'request-timeout'

/**
 * Answers piece requests: one request per stream, the answer a header and
 * data frames. With an upload cap each frame is no larger than the bucket's
 * burst and is sent only once granted, so what leaves the agent follows the
 * cap over any one-second window.
 */
export class ChunkServer {
  private readonly init: ChunkServerInit
  private active = 0

  constructor (init: ChunkServerInit) {
    this.init = init
  }

  get activeUploads (): number {
    return this.active
  }

  async handle (stream: Stream, remotePeer: string, handlerOptions: AbortOptions = {}): Promise<void> {
    // A requester that gives up closes the stream: stop waiting for the upload bucket then.
    const gone = new AbortController()
    const onClose = (): void => { gone.abort(new Error('the stream closed')) }
    stream.addEventListener('close', onClose, { once: true })
    const options: AbortOptions = { signal: anySignal(handlerOptions.signal, gone.signal) }
    try {
      await this.serve(stream, remotePeer, options)
    } finally {
      stream.removeEventListener('close', onClose)
    }
  }

  private async serve (stream: Stream, remotePeer: string, options: AbortOptions): Promise<void> {
    const writeTimeoutMs = this.init.writeTimeoutMs ?? WRITE_TIMEOUT_MS
    const answer = async (status: PieceStatus, value = 0): Promise<void> => {
      await sendBytes(stream, encodeFrame(encodePieceHeader(status, value)), { signal: AbortSignal.timeout(writeTimeoutMs) })
      await stream.close({ signal: AbortSignal.timeout(writeTimeoutMs) })
    }
    let lent: Uint8Array | undefined
    try {
      const reader = new FrameReader(stream, { maxFrameBytes: REQUEST_BYTES, maxBufferBytes: 4 * REQUEST_BYTES })
      const readSignal = anySignal(options.signal, AbortSignal.timeout(this.init.requestReadTimeoutMs ?? REQUEST_READ_TIMEOUT_MS))
      let frame
      try {
        frame = await reader.read({ signal: readSignal })
      } catch (error) {
        if (options.signal?.aborted !== true && readSignal.aborted) this.init.onRefused?.(remotePeer, 'request-timeout', 'no request within the time allowed')
        else if (error instanceof FrameTooLargeError || error instanceof TruncatedFrameError) this.init.onRefused?.(remotePeer, 'malformed-request', describeError(error))
        throw error
      }
      if (frame === null) throw new MalformedPieceMessageError('the stream ended before a request')
      const admission = this.init.admission?.admit(remotePeer)
      if (admission !== undefined && !admission.admitted) {
        this.init.onRefused?.(remotePeer, 'rate-limited', `over its request budget; told to wait ${admission.retryAfterMs} ms${admission.disconnect ? ', and disconnected for asking regardless' : ''}`)
        try {
          await answer('rate-limited', admission.retryAfterMs)
        } finally {
          // Even when the flooder did not wait for the answer.
          if (admission.disconnect) this.init.onAbuse?.(remotePeer)
        }
        return
      }
      let request: PieceRequest
      try {
        request = decodePieceRequest(frame)
      } catch (error) {
        this.init.onRefused?.(remotePeer, 'malformed-request', describeError(error))
        await answer('invalid')
        return
      }
      if (this.init.mayServe?.(remotePeer) === false) {
        this.init.onRefused?.(remotePeer, 'peer-not-allowed', 'the peer is banned or no longer on the allow-list')
        await answer('refused')
        return
      }
      if (this.active >= (this.init.maxConcurrentUploads ?? DEFAULT_MAX_CONCURRENT_UPLOADS)) {
        await answer('busy')
        return
      }
      this.active++
      try {
        let bytes: Uint8Array
        try {
          bytes = await this.init.source.readPiece(request, options)
        } catch (error) {
          await answer(error instanceof PieceNotHeldError ? 'not-cached' : 'invalid')
          return
        }
        lent = bytes
        await this.send(stream, bytes, remotePeer, writeTimeoutMs, options)
      } finally {
        this.active--
      }
    } catch (error) {
      stream.abort(asError(error))
    } finally {
      // Closed (everything written) or aborted (nothing more will be): the bytes are free.
      if (lent !== undefined) this.init.source.donePiece?.(lent)
    }
  }

  private async send (stream: Stream, bytes: Uint8Array, remotePeer: string, writeTimeoutMs: number, options: AbortOptions): Promise<void> {
    const bucket = this.init.uploadBucket
    if (bucket === undefined) {
      // Uncapped, the whole answer goes down in one write: one muxer frame,
      // one window update from the requester, rather than one per data frame.
      const answer = encodeFrame(encodePieceHeader('ok', bytes.byteLength))
      for (let offset = 0; offset < bytes.byteLength; offset += MAX_DATA_FRAME_BYTES) answer.append(encodeFrame(bytes.subarray(offset, Math.min(bytes.byteLength, offset + MAX_DATA_FRAME_BYTES))))
      await sendBytes(stream, answer, { signal: anySignal(options.signal, AbortSignal.timeout(writeTimeoutMs)) })
      this.init.onUploaded?.(remotePeer, bytes.byteLength)
      await stream.close({ signal: AbortSignal.timeout(writeTimeoutMs) })
      return
    }
    const frameBytes = Math.min(MAX_DATA_FRAME_BYTES, bucket?.pieceBytes ?? MAX_DATA_FRAME_BYTES)
    const header = encodeFrame(encodePieceHeader('ok', bytes.byteLength))
    let pending: Uint8ArrayList | undefined = header
    for (let offset = 0; offset < bytes.byteLength; offset += frameBytes) {
      const slice = bytes.subarray(offset, Math.min(bytes.byteLength, offset + frameBytes))
      if (bucket !== undefined) await take(bucket, slice.byteLength, options.signal)
      const frame = encodeFrame(slice)
      if (pending !== undefined) {
        pending.append(frame)
        await sendBytes(stream, pending, { signal: anySignal(options.signal, AbortSignal.timeout(writeTimeoutMs)) })
        pending = undefined
      } else {
        await sendBytes(stream, frame, { signal: anySignal(options.signal, AbortSignal.timeout(writeTimeoutMs)) })
      }
      this.init.onUploaded?.(remotePeer, slice.byteLength)
    }
    if (pending !== undefined) await sendBytes(stream, pending, { signal: AbortSignal.timeout(writeTimeoutMs) })
    await stream.close({ signal: AbortSignal.timeout(writeTimeoutMs) })
  }
}

function anySignal (...signals: Array<AbortSignal | undefined>): AbortSignal {
  return AbortSignal.any(signals.filter((signal): signal is AbortSignal => signal !== undefined))
}
