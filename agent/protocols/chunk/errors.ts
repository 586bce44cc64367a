import type { PieceStatus } from './messages.js'
import { MeshdeployError } from '../../../protocol/errors.js'

/** The peer answered with a refusal instead of the bytes. */
export class PieceRefusedError extends MeshdeployError {
  readonly status: Exclude<PieceStatus, 'ok'>
  /** For `rate-limited`: how long the peer asks this agent to wait. */
  readonly retryAfterMs?: number
  constructor (status: Exclude<PieceStatus, 'ok'>, options: { message?: string, retryAfterMs?: number } = {}) {
    super(options.message ?? `the peer refused the piece: ${status}${options.retryAfterMs !== undefined ? ` (ask again in ${options.retryAfterMs} ms)` : ''}`, 'piece-refused')
    this.name = 'PieceRefusedError'
    this.status = status
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs
  }
}

/** A request or answer that does not decode, or bytes that do not add up to what was announced. */
export class MalformedPieceMessageError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'malformed-answer')
    this.name = 'MalformedPieceMessageError'
  }
}

/** The peer went quiet, or nearly so, in the middle of an answer. */
export class PieceStalledError extends MeshdeployError {
  readonly idleMs: number
  constructor (idleMs: number, minProgressBytes?: number) {
    super(minProgressBytes === undefined ? `no bytes from the peer for ${idleMs} ms` : `fewer than ${minProgressBytes} bytes from the peer in ${idleMs} ms`, 'stalled')
    this.name = 'PieceStalledError'
    this.idleMs = idleMs
  }
}

/** Thrown by a piece source that does not hold the piece: the requester is told `not-cached`. */
export class PieceNotHeldError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'not-cached')
    this.name = 'PieceNotHeldError'
  }
}
