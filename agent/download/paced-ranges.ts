import type { Grant, TokenBucket } from './token-bucket.js'

export interface PacedRangesInit {
  lengthBytes: number
  /** Largest range asked for at once. @default the whole length, or the bucket's piece size when capped */
  maxRangeBytes?: number
  /** Paces the ranges: each is requested only once the bucket granted its bytes. */
  bucket?: TokenBucket
  signal: AbortSignal
}

/** Fetches `[start, end)`; calls `onBytes` as bytes arrive, so that the bucket paces arrivals. */
export type FetchRange = (start: number, end: number, onBytes?: (bytes: number) => void) => Promise<void>

/**
 * Fetches `[0, lengthBytes)` as consecutive ranges, one after the other, for
 * the origin and for peers alike. Capped, each range is no larger than the
 * bucket's burst and is asked for only once the bucket granted it; its bytes
 * count as in flight until they arrive, so that what crosses the wire, not
 * only what is asked for, follows the cap. The next range is granted while
 * the current one travels, so the bucket's wait and the request's latency
 * overlap. A range that fails counts as arrived in full (part of it may
 * still be on the wire); the next range's grant, never used, goes back.
 */
export async function fetchPacedRanges (init: PacedRangesInit, fetchRange: FetchRange): Promise<void> {
  const { lengthBytes, bucket, signal } = init
  const rangeBytes = Math.max(1, Math.min(init.maxRangeBytes ?? lengthBytes, bucket?.pieceBytes ?? lengthBytes, lengthBytes))
  const endOf = (start: number): number => Math.min(lengthBytes, start + rangeBytes)
  if (bucket === undefined) {
    for (let start = 0; start < lengthBytes; start += rangeBytes) await fetchRange(start, endOf(start))
    return
  }
  let next: Grant | undefined = bucket.acquire(endOf(0), signal)
  try {
    for (let start = 0; start < lengthBytes; start += rangeBytes) {
      const grant: Grant = next!
      await grant.granted
      const end = endOf(start)
      next = end < lengthBytes ? bucket.acquire(endOf(end) - end, signal) : undefined
      try {
        await fetchRange(start, end, grant.arrived)
      } finally {
        grant.finish()
      }
    }
  } finally {
    next?.cancel()
  }
}
