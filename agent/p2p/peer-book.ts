export const DEFAULT_FIRST_RETRY_MS = 1000
export const DEFAULT_MAX_RETRY_MS = 60_000
/** A connection shorter than this counts as a failed dial (the peer refused us after the handshake). */
export const DEFAULT_MIN_CONNECTION_MS = 5000
/** An mDNS sighting is forgotten after this many failed dials in a row. */
export const DEFAULT_MDNS_DIAL_ATTEMPTS = 5
/** A peer this agent hung up on (bad chunks, a request flood, malformed announcements) is not dialed again for this long. */
export const DEFAULT_HUNG_UP_HOLD_MS = 30_000

/** An address that keeps failing is tried again at most this rarely. */
export const DEFAULT_MAX_ADDRESS_RETRY_MS = 30 * 60_000
/** Failing addresses remembered at most; the oldest are forgotten first. */
export const MAX_TRACKED_ADDRESSES = 1024

export type PeerOrigin = 'coordinator' | 'mdns'

export interface PeerBookInit {
  now: () => number
  /** Uniform in [0, 1): spreads retries so a site does not redial in step. */
  random: () => number
  /** @default 1000 */
  firstRetryMs?: number
  /** @default 60000 */
  maxRetryMs?: number
  /** @default 5 */
  mdnsDialAttempts?: number
  /** @default 5000 */
  minConnectionMs?: number
  /** @default DEFAULT_HUNG_UP_HOLD_MS */
  hungUpHoldMs?: number
  /** @default DEFAULT_MAX_ADDRESS_RETRY_MS */
  maxAddressRetryMs?: number
}

interface Entry {
  addresses: string[]
  origins: Set<PeerOrigin>
  connected: boolean
  connectedAt: number
  dialing: boolean
  failures: number
  retryAt: number
  /** This agent hung up on the peer: no dial before then, whatever else happens. */
  heldUntil: number
  /** The coordinator lists it as a site cache. */
  siteCache: boolean
}

/**
 * The peers this agent keeps connections to, with where it learned of them
 * and when to dial them again. Pure: the discovery code asks it whom to
 * dial and tells it how dials went.
 */
export class PeerBook {
  private readonly init: PeerBookInit
  private readonly entries = new Map<string, Entry>()
  /**
   * Addresses whose dials failed, by address rather than by peer: a peer
   * listed with other addresses, or listed again, does not make this agent
   * dial an address that keeps failing (a device may name any host and port
   * as its own).
   */
  private readonly failingAddresses = new Map<string, { failures: number, retryAt: number }>()

  constructor (init: PeerBookInit) {
    this.init = init
  }

  private entry (peer: string): Entry {
    let entry = this.entries.get(peer)
    if (entry === undefined) {
      entry = { addresses: [], origins: new Set(), connected: false, connectedAt: 0, dialing: false, failures: 0, retryAt: 0, heldUntil: 0, siteCache: false }
      this.entries.set(peer, entry)
    }
    return entry
  }

  /** The coordinator's site peer list, replacing the previous one. */
  setListed (peers: Array<{ peerId: string, addresses: string[], siteCache?: boolean }>): void {
    const listed = new Set(peers.map(peer => peer.peerId))
    for (const [peer, entry] of this.entries) {
      if (listed.has(peer) || !entry.origins.delete('coordinator')) continue
      if (entry.origins.size === 0 && !entry.connected) this.entries.delete(peer)
    }
    for (const peer of peers) {
      const entry = this.entry(peer.peerId)
      if (!entry.origins.has('coordinator') || entry.addresses.join() !== peer.addresses.join()) {
        // New or moved: worth a dial now.
        entry.failures = 0
        entry.retryAt = 0
      }
      entry.origins.add('coordinator')
      entry.addresses = [...peer.addresses]
      entry.siteCache = peer.siteCache === true
    }
  }

  /** A peer seen on the LAN. */
  discovered (peer: string, addresses: string[]): void {
    const entry = this.entry(peer)
    if (!entry.origins.has('mdns')) {
      entry.failures = 0
      entry.retryAt = 0
    }
    entry.origins.add('mdns')
    if (!entry.origins.has('coordinator')) entry.addresses = [...addresses]
  }

  connected (peer: string): void {
    const entry = this.entry(peer)
    if (!entry.connected) entry.connectedAt = this.init.now()
    entry.connected = true
    entry.dialing = false
    for (const address of entry.addresses) this.failingAddresses.delete(address)
  }

  disconnected (peer: string): void {
    const entry = this.entries.get(peer)
    if (entry === undefined) return
    entry.connected = false
    if (entry.origins.size === 0) {
      this.entries.delete(peer)
      return
    }
    // A peer that drops us right away (its allow-list does not hold us yet) is retried ever more slowly.
    const lasted = this.init.now() - entry.connectedAt >= (this.init.minConnectionMs ?? DEFAULT_MIN_CONNECTION_MS)
    entry.failures = lasted ? 0 : entry.failures + 1
    entry.retryAt = this.init.now() + this.backoff(entry.failures)
  }

  /**
   * This agent hung up on the peer for what it did: it may dial in again
   * (and meet the gate), but this side does not dial it before the hold
   * ends. New addresses or sightings do not shorten the hold.
   */
  hungUp (peer: string): void {
    const entry = this.entries.get(peer)
    if (entry === undefined) return
    entry.failures++
    entry.heldUntil = this.init.now() + (this.init.hungUpHoldMs ?? DEFAULT_HUNG_UP_HOLD_MS)
  }

  dialing (peer: string): void {
    this.entry(peer).dialing = true
  }

  dialFailed (peer: string): void {
    const entry = this.entries.get(peer)
    if (entry === undefined) return
    entry.dialing = false
    entry.failures++
    this.addressesFailed(entry.addresses)
    if (!entry.origins.has('coordinator') && entry.failures >= (this.init.mdnsDialAttempts ?? DEFAULT_MDNS_DIAL_ATTEMPTS)) {
      entry.origins.delete('mdns')
      if (entry.origins.size === 0 && !entry.connected) {
        this.entries.delete(peer)
        return
      }
    }
    entry.retryAt = this.init.now() + this.backoff(entry.failures)
  }

  /** The addresses of a failed dial back off, each on its own count, up to a far higher ceiling than a peer's. */
  private addressesFailed (addresses: readonly string[]): void {
    const now = this.init.now()
    for (const address of addresses) {
      const failures = (this.failingAddresses.get(address)?.failures ?? 0) + 1
      this.failingAddresses.delete(address)
      this.failingAddresses.set(address, { failures, retryAt: now + this.backoff(failures, this.init.maxAddressRetryMs ?? DEFAULT_MAX_ADDRESS_RETRY_MS) })
    }
    while (this.failingAddresses.size > MAX_TRACKED_ADDRESSES) {
      const [oldest] = this.failingAddresses.keys()
      this.failingAddresses.delete(oldest)
    }
  }

  /** Doubling from the first retry up to the ceiling, with up to a quarter of jitter. */
  private backoff (failures: number, ceilingMs = this.init.maxRetryMs ?? DEFAULT_MAX_RETRY_MS): number {
    const first = this.init.firstRetryMs ?? DEFAULT_FIRST_RETRY_MS
    const base = Math.min(ceilingMs, first * 2 ** Math.min(40, Math.max(0, failures - 1)))
    return Math.round(base * (1 + this.init.random() / 4))
  }

  /** A peer's addresses that are not backing off now, and when the first of the others is due again. */
  private usable (entry: Entry, now: number): { addresses: string[], nextAt?: number } {
    const addresses: string[] = []
    let nextAt: number | undefined
    for (const address of entry.addresses) {
      const failing = this.failingAddresses.get(address)
      if (failing === undefined || failing.retryAt <= now) addresses.push(address)
      else if (nextAt === undefined || failing.retryAt < nextAt) nextAt = failing.retryAt
    }
    return { addresses, ...(nextAt !== undefined ? { nextAt } : {}) }
  }

  /**
   * Peers to dial now, with those of their addresses that are not backing
   * off (a peer whose every address is backing off waits); `allows` filters
   * out those the gate would refuse. `failing`: the peer's addresses to keep
   * out of the dial.
   */
  due (allows: (peer: string) => boolean): Array<{ peer: string, addresses: string[], failing: string[] }> {
    const now = this.init.now()
    const out: Array<{ peer: string, addresses: string[], failing: string[] }> = []
    for (const [peer, entry] of this.entries) {
      if (entry.connected || entry.dialing || Math.max(entry.retryAt, entry.heldUntil) > now || !allows(peer)) continue
      const { addresses } = this.usable(entry, now)
      if (entry.addresses.length > 0 && addresses.length === 0) continue
      out.push({ peer, addresses, failing: entry.addresses.filter(address => !addresses.includes(address)) })
    }
    return out
  }

  /** When the next retry falls due, if any. */
  nextRetryAt (): number | undefined {
    const now = this.init.now()
    let next: number | undefined
    for (const entry of this.entries.values()) {
      if (entry.connected || entry.dialing) continue
      let at = Math.max(entry.retryAt, entry.heldUntil)
      const usable = this.usable(entry, now)
      if (entry.addresses.length > 0 && usable.addresses.length === 0 && usable.nextAt !== undefined) at = Math.max(at, usable.nextAt)
      if (next === undefined || at < next) next = at
    }
    return next
  }

  /** The peers connected now, with when each connection opened. */
  connectedPeers (): Array<{ peer: string, since: number, siteCache: boolean }> {
    const out: Array<{ peer: string, since: number, siteCache: boolean }> = []
    for (const [peer, entry] of this.entries) if (entry.connected) out.push({ peer, since: entry.connectedAt, siteCache: entry.siteCache })
    return out
  }

  /** Every peer known (listed, seen on the LAN or connected). */
  peers (): IterableIterator<string> {
    return this.entries.keys()
  }

  isSiteCache (peer: string): boolean {
    return this.entries.get(peer)?.siteCache === true
  }

  get size (): number {
    return this.entries.size
  }

  has (peer: string): boolean {
    return this.entries.has(peer)
  }
}
