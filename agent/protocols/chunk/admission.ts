import { RateLimiter } from '../../../protocol/rate-limiter.js'
import {
  ABUSE_WINDOW_MS, DEFAULT_REFUSALS_BEFORE_DISCONNECT, DEFAULT_REQUEST_BURST, DEFAULT_REQUESTS_PER_SECOND, MIN_RETRY_AFTER_MS
} from './constants.js'

export interface ChunkAdmissionInit {
  /** @default DEFAULT_REQUESTS_PER_SECOND */
  requestsPerSecond?: number
  /** @default DEFAULT_REQUEST_BURST */
  burst?: number
  /** Refusals within `abuseWindowMs` after which the peer is disconnected. @default DEFAULT_REFUSALS_BEFORE_DISCONNECT */
  refusalsBeforeDisconnect?: number
  /** @default ABUSE_WINDOW_MS */
  abuseWindowMs?: number
  /** @default MIN_RETRY_AFTER_MS */
  minRetryAfterMs?: number
  /** Peers tracked at most (the least recently seen are forgotten). @default 10_000 */
  maxPeers?: number
  now?: () => number
}

export type AdmissionDecision =
  | { admitted: true }
  /** Over budget: answer `rate-limited` with the wait; `disconnect` when the peer keeps asking regardless. */
  | { admitted: false, retryAfterMs: number, disconnect: boolean }

/**
 * Who may make a piece request now: a token bucket per peer for the
 * requests, and a second one for the refusals, so that a peer that keeps
 * asking while it is told to wait runs out of that too and loses its
 * connection. Pure: the clock is injected and nothing is sent from here.
 */
export class ChunkAdmission {
  private readonly requests: RateLimiter
  private readonly refusals: RateLimiter
  private readonly minRetryAfterMs: number

  constructor (init: ChunkAdmissionInit = {}) {
    const now = init.now ?? Date.now
    const maxKeys = init.maxPeers ?? 10_000
    const refusalsBeforeDisconnect = init.refusalsBeforeDisconnect ?? DEFAULT_REFUSALS_BEFORE_DISCONNECT
    this.requests = new RateLimiter({ requestsPerSecond: init.requestsPerSecond ?? DEFAULT_REQUESTS_PER_SECOND, burst: init.burst ?? DEFAULT_REQUEST_BURST, maxKeys, now })
    this.refusals = new RateLimiter({
      requestsPerSecond: refusalsBeforeDisconnect * 1000 / (init.abuseWindowMs ?? ABUSE_WINDOW_MS),
      burst: refusalsBeforeDisconnect,
      maxKeys,
      now
    })
    this.minRetryAfterMs = init.minRetryAfterMs ?? MIN_RETRY_AFTER_MS
  }

  admit (peer: string): AdmissionDecision {
    const decision = this.requests.take(peer)
    if (decision.allowed) return { admitted: true }
    return {
      admitted: false,
      retryAfterMs: Math.max(this.minRetryAfterMs, decision.retryAfterMs),
      disconnect: !this.refusals.take(peer).allowed
    }
  }

  /** The peer was disconnected: when it comes back it starts with full budgets. */
  forget (peer: string): void {
    this.requests.forget(peer)
    this.refusals.forget(peer)
  }
}
