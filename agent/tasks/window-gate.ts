import { nextSlot, openWindowAt, type WindowRule, type WindowSlot } from '../../protocol/index.js'

/** Least time a window must stay open for a reboot; a prompt's deadline is cut to end inside the window. */
export const REBOOT_WINDOW_MS = 60_000

/** Longest sleep before the windows are looked at again (a changed clock, a missed update). */
export const WINDOW_RECHECK_MS = 60_000

/**
 * The device's maintenance windows as the coordinator last signed them, and
 * waits on them: a wait ends when its time comes or when the windows change.
 * Evaluation itself is the pure `window-schedule` of the protocol.
 */
export class WindowWatch {
  private rules: readonly WindowRule[] = []
  private readonly waiters = new Set<() => void>()
  readonly timeZone: string
  private readonly now: () => number

  constructor (init: { timeZone: string, now?: () => number }) {
    this.timeZone = init.timeZone
    this.now = init.now ?? Date.now
  }

  get windows (): readonly WindowRule[] {
    return this.rules
  }

  /** New windows: every wait looks again. */
  update (rules: readonly WindowRule[]): void {
    this.rules = rules
    for (const wake of [...this.waiters]) wake()
  }

  /** No window applies to the device: work may run at any time (SCCM does the same). */
  get unrestricted (): boolean {
    return this.rules.length === 0
  }

  /** Where work of this length may start: now, or later; undefined when no window is long enough. */
  slotFor (neededMs: number): WindowSlot | undefined {
    if (this.unrestricted) return { startMs: this.now(), endMs: Number.POSITIVE_INFINITY }
    return nextSlot(this.rules, this.now(), Math.max(neededMs, 60_000), this.timeZone)
  }

  /** Whether a window is open now. */
  openNow (): boolean {
    return this.unrestricted || openWindowAt(this.rules, this.now(), this.timeZone) !== undefined
  }

  /** Sleeps until `untilMs` on the device clock (re-checked at least every minute), or until the windows change. */
  async sleep (untilMs: number | undefined, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    const delayMs = Math.max(0, Math.min(WINDOW_RECHECK_MS, (untilMs ?? Number.POSITIVE_INFINITY) - this.now()))
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer)
        this.waiters.delete(done)
        signal.removeEventListener('abort', aborted)
        resolve()
      }
      const aborted = (): void => {
        done()
        reject(signal.reason)
      }
      const timer = setTimeout(done, delayMs)
      this.waiters.add(done)
      signal.addEventListener('abort', aborted, { once: true })
    })
  }
}
