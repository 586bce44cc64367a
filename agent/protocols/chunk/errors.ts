import type { PieceStatus } from './messages.js'

/** The peer answered with a refusal instead of the bytes. */
export class PieceRefusedError extends Error {
  readonly status: Exclude<PieceStatus, 'ok'>
  constructor (status: Exclude<PieceStatus, 'ok'>, message?: string) {
    super(message ?? `the peer refused the piece: ${status}`)
    this.name = 'PieceRefusedError'
    this.status = status
  }
}

/** A request or answer that does not decode, or bytes that do not add up to what was announced. */
export class MalformedPieceMessageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'MalformedPieceMessageError'
  }
}

/** The peer went quiet in the middle of an answer. */
export class PieceStalledError extends Error {
  readonly idleMs: number
  constructor (idleMs: number) {
    super(`no bytes from the peer for ${idleMs} ms`)
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
