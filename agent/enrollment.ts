import { setTimeout as sleep } from 'node:timers/promises'
import { describeError } from '../protocol/index.js'
import type { Logger } from '../protocol/logger.js'
import { CoordinatorUnreachableError } from './errors.js'

/** How long a first enrollment keeps trying while the coordinator is out of reach. */
export const DEFAULT_ENROLL_RETRY_MS = 5 * 60_000
/** The first wait between tries; it doubles up to MAX_ENROLL_WAIT_MS. */
export const FIRST_ENROLL_WAIT_MS = 1000
export const MAX_ENROLL_WAIT_MS = 30_000

export interface EnrollmentLoopInit {
  /** @default DEFAULT_ENROLL_RETRY_MS */
  giveUpAfterMs?: number
  logger: Pick<Logger, 'warn'>
  signal?: AbortSignal
  /** @default Date.now */
  now?: () => number
  /** Waits, cancellable; a test passes one driven by its fake clock. @default node's timers */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
}

/** Whether a failure says the coordinator is out of reach (worth another try) rather than that it refused. */
export function isUnreachable (error: unknown): boolean {
  return error instanceof CoordinatorUnreachableError || (error as Error | undefined)?.name === 'TimeoutError'
}

/**
 * Runs `enroll` until it succeeds. A device installed while the coordinator
 * is out of reach keeps trying for a while, waiting 1 s, 2 s, 4 s … up to
 * 30 s between tries; a refusal, or an outage longer than `giveUpAfterMs`,
 * ends it with the last error. Each try is the caller's own (a new key for
 * each: one whose answer was lost may be enrolled already).
 */
export async function enrollWithRetry<T> (enroll: () => Promise<T>, init: EnrollmentLoopInit): Promise<T> {
  const now = init.now ?? Date.now
  const wait = init.sleep ?? (async (ms: number, signal?: AbortSignal) => { await sleep(ms, undefined, signal !== undefined ? { signal } : {}) })
  const giveUpAt = now() + (init.giveUpAfterMs ?? DEFAULT_ENROLL_RETRY_MS)
  let waitMs = FIRST_ENROLL_WAIT_MS
  for (;;) {
    init.signal?.throwIfAborted()
    try {
      return await enroll()
    } catch (error) {
      if (!isUnreachable(error) || now() + waitMs > giveUpAt) throw error
      init.logger.warn({ err: describeError(error), retryInMs: waitMs }, 'cannot reach the coordinator to enroll; trying again')
      await wait(waitMs, init.signal)
      waitMs = Math.min(MAX_ENROLL_WAIT_MS, waitMs * 2)
    }
  }
}
