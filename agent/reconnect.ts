/** The first wait after a failed request to the coordinator. */
export const FIRST_BACKOFF_MS = 1000
/** The longest wait the backoff grows to (the spread comes on top). */
export const MAX_BACKOFF_MS = 30_000
/** The longest spread an agent accepts from an answer, whatever it says. */
export const MAX_SPREAD_MS = 5 * 60_000

export interface ReconnectInput {
  /** Failures in a row before this one: 0 right after a request that worked. */
  attempt: number
  /** The coordinator's Retry-After (a 503 or 429), in milliseconds. */
  retryAfterMs?: number
  /** Over how long the fleet's returns are spread (the last answer's `reconnectSpreadSeconds`); 0 for none. Only the first failure is spread. */
  spreadMs: number
}

/**
 * How long an agent waits before it asks the coordinator again after a
 * failed request: an exponential backoff (or the Retry-After it was told)
 * with up to half again as jitter, plus, on the first failure after a
 * request that worked, a uniform share of the spread. A coordinator that
 * restarts under a large fleet sees every held request fail at the same
 * instant; without the spread all of them come back within the same half
 * second. The coordinator sizes the spread to its fleet (a few milliseconds
 * for ten devices, its poll interval for a hundred thousand), so small
 * fleets come back at once. Only the first wait is spread: the fleet is
 * spread by then, and later failures (the coordinator still starting) keep
 * their places in it, while a spread on every wait would leave the unlucky
 * a long tail of backoffs that each add a spread.
 *
 * Pure: `random` returns numbers in [0, 1) and is drawn twice.
 */
export function reconnectDelayMs (input: ReconnectInput, random: () => number = Math.random): number {
  const backoff = input.retryAfterMs ?? Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** Math.min(Math.max(0, input.attempt), 16))
  const jitter = backoff * random() / 2
  const spreadMs = input.attempt === 0 && Number.isFinite(input.spreadMs) ? Math.min(MAX_SPREAD_MS, Math.max(0, input.spreadMs)) : 0
  const spread = spreadMs * random()
  return Math.round(backoff + jitter + spread)
}

/** The spread an assignments answer asks for, in milliseconds: 0 when it says nothing usable. */
export function spreadOfAnswer (answer: { reconnectSpreadSeconds?: unknown } | undefined): number {
  const seconds = answer?.reconnectSpreadSeconds
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds <= 0) return 0
  return Math.min(MAX_SPREAD_MS, seconds * 1000)
}
