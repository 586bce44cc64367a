/**
 * Request-rate limiting by key (an operator token, a device or a client
 * address at the coordinator; a peer on an agent's chunk protocol): one
 * token bucket per key that refills at `requestsPerSecond` up to `burst`
 * requests. It only computes — no timers — and takes its clock from the
 * caller, so its behaviour is tested with tables.
 */

export interface RateLimitRule {
  /** Sustained requests per second. */
  requestsPerSecond: number
  /** Requests that may pass at once after an idle spell. */
  burst: number
}

export interface RateLimiterInit extends RateLimitRule {
  /** Keys tracked at most; the least recently seen are forgotten first. @default 100_000 */
  maxKeys?: number
  /** @default Date.now */
  now?: () => number
}

export type RateDecision = { allowed: true, remaining: number } | { allowed: false, retryAfterMs: number }

interface Bucket {
  tokens: number
  updatedAt: number
}

export const DEFAULT_MAX_RATE_KEYS = 100_000

export class RateLimiter {
  readonly requestsPerSecond: number
  readonly burst: number
  private readonly maxKeys: number
  private readonly now: () => number
  /** Insertion order is recency order: a key is moved to the end when seen. */
  private readonly buckets = new Map<string, Bucket>()

  constructor (init: RateLimiterInit) {
    if (!(init.requestsPerSecond > 0)) throw new RangeError('requestsPerSecond must be positive')
    if (!(init.burst >= 1)) throw new RangeError('burst must be at least 1')
    this.requestsPerSecond = init.requestsPerSecond
    this.burst = init.burst
    this.maxKeys = init.maxKeys ?? DEFAULT_MAX_RATE_KEYS
    this.now = init.now ?? Date.now
  }

  /** Counts one request (or `cost` requests) against `key`. A refused request costs nothing. */
  take (key: string, cost = 1): RateDecision {
    const now = this.now()
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, updatedAt: now }
    this.buckets.delete(key)
    bucket.tokens = this.tokensOf(bucket, now)
    bucket.updatedAt = Math.max(bucket.updatedAt, now)
    this.buckets.set(key, bucket)
    this.forgetOldest()
    const decision = this.decide(bucket.tokens, cost)
    if (decision.allowed) bucket.tokens -= cost
    return decision
  }

  private tokensOf (bucket: Bucket, now: number): number {
    return Math.min(this.burst, bucket.tokens + Math.max(0, now - bucket.updatedAt) * this.requestsPerSecond / 1000)
  }

  private decide (tokens: number, cost: number): RateDecision {
    if (tokens >= cost) return { allowed: true, remaining: Math.floor(tokens - cost) }
    return { allowed: false, retryAfterMs: Math.ceil((cost - tokens) * 1000 / this.requestsPerSecond) }
  }

  /** Forgets a key: it starts again with a full bucket. */
  forget (key: string): void {
    this.buckets.delete(key)
  }

  /** Keys currently tracked. */
  get size (): number {
    return this.buckets.size
  }

  private forgetOldest (): void {
    // A forgotten key starts again with a full bucket: the bound trades a little precision for a memory ceiling under address floods.
    while (this.buckets.size > this.maxKeys) {
      const oldest = this.buckets.keys().next().value
      if (oldest === undefined) return
      this.buckets.delete(oldest)
    }
  }
}
