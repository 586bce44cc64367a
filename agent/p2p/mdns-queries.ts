/** Queries after the one at start, as delays from the start: agents that start together find each other within seconds. */
export const DEFAULT_MDNS_START_QUERIES_MS = [1000, 3000, 7000]
/** While the agent knows fewer site peers than its peer set holds, it asks the LAN this often. */
export const DEFAULT_MDNS_WANTING_INTERVAL_MS = 30_000
/** Once it knows enough, the pause between queries starts here and doubles… */
export const DEFAULT_MDNS_MIN_QUIET_INTERVAL_MS = 60_000
/** …up to this. */
export const DEFAULT_MDNS_MAX_QUIET_INTERVAL_MS = 15 * 60_000

export interface MdnsQueryPolicyInit {
  /** @default DEFAULT_MDNS_START_QUERIES_MS */
  startQueriesMs?: number[]
  /** @default DEFAULT_MDNS_WANTING_INTERVAL_MS */
  wantingIntervalMs?: number
  /** @default DEFAULT_MDNS_MIN_QUIET_INTERVAL_MS */
  minQuietIntervalMs?: number
  /** @default DEFAULT_MDNS_MAX_QUIET_INTERVAL_MS */
  maxQuietIntervalMs?: number
  /** Jitter of the steady intervals, in [0, 1). @default Math.random */
  random?: () => number
}

/**
 * When an agent asks the LAN (mDNS) for its site peers. Every query is
 * answered by every agent of the site and every answer reaches every agent,
 * so a fixed interval makes each agent's traffic grow with the site (at 48
 * agents and 5 s, 450 answers a second). Queries are many only while the
 * agent starts; then only as often as it lacks peers, and rarer and rarer
 * while it knows enough (the coordinator's list and connections also tell of
 * peers). Steady intervals are jittered (¾–1¼) so a site's agents, started
 * together, do not query in step. Pure: the caller keeps the timer.
 */
export class MdnsQueryPolicy {
  private readonly startQueriesMs: number[]
  private readonly wantingIntervalMs: number
  private readonly minQuietIntervalMs: number
  private readonly maxQuietIntervalMs: number
  private readonly random: () => number
  private sent = 0
  private quietStreak = 0

  constructor (init: MdnsQueryPolicyInit = {}) {
    this.startQueriesMs = [...(init.startQueriesMs ?? DEFAULT_MDNS_START_QUERIES_MS)].sort((a, b) => a - b)
    this.wantingIntervalMs = init.wantingIntervalMs ?? DEFAULT_MDNS_WANTING_INTERVAL_MS
    this.minQuietIntervalMs = init.minQuietIntervalMs ?? DEFAULT_MDNS_MIN_QUIET_INTERVAL_MS
    this.maxQuietIntervalMs = Math.max(this.minQuietIntervalMs, init.maxQuietIntervalMs ?? DEFAULT_MDNS_MAX_QUIET_INTERVAL_MS)
    this.random = init.random ?? Math.random
  }

  /**
   * The delay from the query just sent (the first: the one at start) to the
   * next, given whether the agent knows fewer site peers than it would hold.
   */
  next (wantsPeers: boolean): number {
    const index = this.sent++
    if (index < this.startQueriesMs.length) return this.startQueriesMs[index] - (index === 0 ? 0 : this.startQueriesMs[index - 1])
    const jitter = 0.75 + 0.5 * this.random()
    if (wantsPeers) {
      this.quietStreak = 0
      return Math.round(this.wantingIntervalMs * jitter)
    }
    const interval = Math.min(this.maxQuietIntervalMs, this.minQuietIntervalMs * 2 ** this.quietStreak)
    if (interval < this.maxQuietIntervalMs) this.quietStreak++
    return Math.round(interval * jitter)
  }
}

export interface MdnsQueriesInit {
  policy: MdnsQueryPolicy
  /** Sends one query to the LAN. */
  query: () => void
  /** Whether the agent knows fewer site peers than it would hold. */
  wantsPeers: () => boolean
}

/** Runs the policy's schedule with a timer that never holds the process open; the query at start is the mDNS service's own. */
export class MdnsQueries {
  private timer?: NodeJS.Timeout
  private stopped = false

  constructor (private readonly init: MdnsQueriesInit) {}

  start (): void {
    this.arm()
  }

  stop (): void {
    this.stopped = true
    clearTimeout(this.timer)
  }

  private arm (): void {
    if (this.stopped) return
    this.timer = setTimeout(() => {
      try {
        this.init.query()
      } catch {}
      this.arm()
    }, this.init.policy.next(this.init.wantsPeers()))
    this.timer.unref()
  }
}
