import type { PieceStatus } from './messages.js'

/** The peer answered with a refusal instead of the bytes. */
export class PieceRefusedError extends Error {
  readonly status: Exclude<PieceStatus, 'ok'>
  /** For `rate-limited`: how long the peer asks this agent to wait. */
  readonly retryAfterMs?: number
  constructor (status: Exclude<PieceStatus, 'ok'>, options: { message?: string, retryAfterMs?: number } = {}) {
    super(options.message ?? `the peer refused the piece: ${status}${options.retryAfterMs !== undefined ? ` (ask again in ${options.retryAfterMs} ms)` : ''}`)
    this.name = 'PieceRefusedError'
    this.status = status
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs
  }
}

/** A request or answer that does not decode, or bytes that do not add up to what was announced. */
export class MalformedPieceMessageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'MalformedPieceMessageError'
  }
}

/** The peer went quiet, or nearly so, in the middle of an answer. */
export class PieceStalledError extends Error {
  readonly idleMs: number
  constructor (idleMs: number, minProgressBytes?: number) {
    super(minProgressBytes === undefined ? `no bytes from the peer for ${idleMs} ms` : `fewer than ${minProgressBytes} bytes from the peer in ${idleMs} ms`)
    this.name = 'PieceStalledError'
    this.idleMs = idleMs
  }
}

/** Thrown by a piece source that does not hold the piece: the requester is told `not-cached`. */
export class PieceNotHeldError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'PieceNotHeldError'
  }
}
