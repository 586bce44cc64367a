import { describeError } from '../protocol/index.js'
import type { Logger } from '../protocol/logger.js'
import type { CoordinatorClient, SelfReport } from './coordinator-client.js'

export const DEFAULT_REPORT_INTERVAL_MS = 60_000
export const DEFAULT_REPORT_DEBOUNCE_MS = 1000

export interface SelfReporterInit {
  client: CoordinatorClient
  logger: Logger
  /** What to report now. */
  snapshot: () => SelfReport
  /** A report goes out at least this often. @default 60000 */
  intervalMs?: number
  /** Changes within this long go out in one report. @default 1000 */
  debounceMs?: number
}

/**
 * Tells the coordinator the agent's libp2p addresses (which it hands to
 * site peers), its role, connected peers and cache use: soon after a
 * change, and at an interval in any case.
 */
export class SelfReporter {
  private readonly init: SelfReporterInit
  private timer?: NodeJS.Timeout
  private dueAt = 0
  private sending?: Promise<void>
  private again = false
  private stopped = false
  private failures = 0

  constructor (init: SelfReporterInit) {
    this.init = init
  }

  start (): void {
    this.soon(0)
  }

  /** Reports after the debounce delay (or `delayMs`); a report already due sooner is kept. */
  soon (delayMs = this.init.debounceMs ?? DEFAULT_REPORT_DEBOUNCE_MS): void {
    if (this.stopped) return
    if (this.sending !== undefined) {
      this.again = true
      return
    }
    const dueAt = Date.now() + delayMs
    if (this.timer !== undefined) {
      if (this.dueAt <= dueAt) return
      clearTimeout(this.timer)
    }
    this.dueAt = dueAt
    this.timer = setTimeout(() => { this.sending = this.send() }, delayMs)
    this.timer.unref()
  }

  private async send (): Promise<void> {
    this.timer = undefined
    let nextMs = this.init.intervalMs ?? DEFAULT_REPORT_INTERVAL_MS
    try {
      await this.init.client.reportSelf(this.init.snapshot(), { timeoutMs: 15_000 })
      this.failures = 0
    } catch (error) {
      this.failures++
      nextMs = Math.min(nextMs, 1000 * 2 ** Math.min(this.failures, 5))
      this.init.logger.warn({ err: describeError(error), retryInMs: nextMs }, 'cannot report to the coordinator')
    } finally {
      this.sending = undefined
    }
    if (this.again) {
      this.again = false
      this.soon()
    } else {
      this.soon(nextMs)
    }
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    await this.sending
  }
}
