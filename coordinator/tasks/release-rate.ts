/** The window of "devices per minute". */
export const RELEASE_WINDOW_MS = 60_000

export interface ReleaseAllowanceInput {
  /** At most this many devices in any window of RELEASE_WINDOW_MS. */
  devicesPerMinute: number
  /** When the task's earlier releases happened, ms; any order, older ones are ignored. */
  recentReleasesMs: readonly number[]
  nowMs: number
}

export interface ReleaseAllowance {
  /** Devices that may be released now. */
  allowed: number
  /** When `allowed` is 0: when the next device may be released. */
  nextSlotAtMs?: number
}

/**
 * Rate control for a task: at most N devices released in any sliding minute.
 * Pure: the caller passes the clock and the release history, so a table of
 * times is the whole test.
 */
export function releaseAllowance (input: ReleaseAllowanceInput): ReleaseAllowance {
  const windowStart = input.nowMs - RELEASE_WINDOW_MS
  const inWindow = input.recentReleasesMs.filter(at => at > windowStart && at <= input.nowMs).sort((a, b) => a - b)
  const allowed = Math.max(0, input.devicesPerMinute - inWindow.length)
  if (allowed > 0) return { allowed }
  // The slot of the oldest release that keeps the window full opens when it leaves the window.
  return { allowed: 0, nextSlotAtMs: inWindow[inWindow.length - input.devicesPerMinute] + RELEASE_WINDOW_MS }
}

/** Drops release times that can no longer matter to the window. */
export function pruneReleases (releasesMs: readonly number[], nowMs: number): number[] {
  return releasesMs.filter(at => at > nowMs - RELEASE_WINDOW_MS)
}
