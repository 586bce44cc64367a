import { setTimeout as sleep } from 'node:timers/promises'

/** Largest burst a bucket allows: a device never sends or receives more than this ahead of its rate. */
export const MAX_BURST_BYTES = 64 * 1024

export interface TokenBucketInit {
  bytesPerSecond: number
  /**
   * Bytes that may pass at once after an idle spell. Kept to a twentieth of a
   * second's worth so that no one-second window exceeds the rate by more than
   * 5%. @default min(64 KiB, bytesPerSecond / 20)
   */
  burstBytes?: number
  /** @default Date.now */
  now?: () => number
}

/**
 * A token bucket that paces bytes to a rate. It only computes: `reserve`
 * says how long the caller must wait before moving the bytes, and callers
 * reserve before they ask for data, so the bytes on the wire follow the
 * grants. Reservations queue behind each other (the bucket may go into
 * debt), so concurrent users share the rate fairly in arrival order.
 */
export class TokenBucket {
  readonly bytesPerSecond: number
  readonly burstBytes: number
  private readonly now: () => number
  private tokens: number
  private updatedAt: number

  constructor (init: TokenBucketInit) {
    if (!(init.bytesPerSecond > 0)) throw new RangeError('the rate must be positive')
    this.bytesPerSecond = init.bytesPerSecond
    this.burstBytes = Math.max(1, Math.floor(init.burstBytes ?? Math.min(MAX_BURST_BYTES, init.bytesPerSecond / 20)))
    this.now = init.now ?? Date.now
    this.tokens = this.burstBytes
    this.updatedAt = this.now()
  }

  /** Largest piece a caller should ask for at once: a request never outruns the bucket by more than a burst. */
  get pieceBytes (): number {
    return this.burstBytes
  }

  private refill (): void {
    const now = this.now()
    const elapsedMs = Math.max(0, now - this.updatedAt)
    this.updatedAt = now
    this.tokens = Math.min(this.burstBytes, this.tokens + elapsedMs * this.bytesPerSecond / 1000)
  }

  /** Takes `bytes` from the bucket and returns the milliseconds to wait before using them. */
  reserve (bytes: number): number {
    this.refill()
    this.tokens -= bytes
    if (this.tokens >= 0) return 0
    return Math.ceil(-this.tokens * 1000 / this.bytesPerSecond)
  }

  /** Gives back bytes reserved but not used (a request that failed). */
  refund (bytes: number): void {
    this.refill()
    this.tokens = Math.min(this.burstBytes, this.tokens + bytes)
  }
}

/** Waits for a reservation, cancellable. */
export async function take (bucket: TokenBucket, bytes: number, signal?: AbortSignal): Promise<void> {
  const waitMs = bucket.reserve(bytes)
  if (waitMs <= 0) return
  try {
    await sleep(waitMs, undefined, signal !== undefined ? { signal } : {})
  } catch (error) {
    bucket.refund(bytes)
    throw error
  }
}
