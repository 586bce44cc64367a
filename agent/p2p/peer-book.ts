export const DEFAULT_FIRST_RETRY_MS = 1000
export const DEFAULT_MAX_RETRY_MS = 60_000
/** A connection shorter than this counts as a failed dial (the peer refused us after the handshake). */
export const DEFAULT_MIN_CONNECTION_MS = 5000
/** An mDNS sighting is forgotten after this many failed dials in a row. */
export const DEFAULT_MDNS_DIAL_ATTEMPTS = 5
/** A peer this agent hung up on (bad chunks, a request flood, malformed announcements) is not dialed again for this long. */
export const DEFAULT_HUNG_UP_HOLD_MS = 30_000

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
}

/**
 * The peers this agent keeps connections to, with where it learned of them
 * and when to dial them again. Pure: the discovery code asks it whom to
 * dial and tells it how dials went.
 */
export class PeerBook {
  private readonly init: PeerBookInit
  private readonly entries = new Map<string, Entry>()

  constructor (init: PeerBookInit) {
    this.init = init
  }

  private entry (peer: string): Entry {
    let entry = this.entries.get(peer)
    if (entry === undefined) {
      entry = { addresses: [], origins: new Set(), connected: false, connectedAt: 0, dialing: false, failures: 0, retryAt: 0, heldUntil: 0 }
      this.entries.set(peer, entry)
    }
    return entry
  }

  /** The coordinator's site peer list, replacing the previous one. */
  setListed (peers: Array<{ peerId: string, addresses: string[] }>): void {
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
    if (!entry.origins.has('coordinator') && entry.failures >= (this.init.mdnsDialAttempts ?? DEFAULT_MDNS_DIAL_ATTEMPTS)) {
      entry.origins.delete('mdns')
      if (entry.origins.size === 0 && !entry.connected) {
        this.entries.delete(peer)
        return
      }
    }
    entry.retryAt = this.init.now() + this.backoff(entry.failures)
  }

  /** Doubling from the first retry up to the ceiling, with up to a quarter of jitter. */
  private backoff (failures: number): number {
    const first = this.init.firstRetryMs ?? DEFAULT_FIRST_RETRY_MS
    const base = Math.min(this.init.maxRetryMs ?? DEFAULT_MAX_RETRY_MS, first * 2 ** Math.max(0, failures - 1))
    return Math.round(base * (1 + this.init.random() / 4))
  }

  /** Peers to dial now, with their addresses; `allows` filters out those the gate would refuse. */
  due (allows: (peer: string) => boolean): Array<{ peer: string, addresses: string[] }> {
    const now = this.init.now()
    const out: Array<{ peer: string, addresses: string[] }> = []
    for (const [peer, entry] of this.entries) {
      if (entry.connected || entry.dialing || Math.max(entry.retryAt, entry.heldUntil) > now || !allows(peer)) continue
      out.push({ peer, addresses: entry.addresses })
    }
    return out
  }

  /** When the next retry falls due, if any. */
  nextRetryAt (): number | undefined {
    let next: number | undefined
    for (const entry of this.entries.values()) {
      if (entry.connected || entry.dialing) continue
      const at = Math.max(entry.retryAt, entry.heldUntil)
      if (next === undefined || at < next) next = at
    }
    return next
  }

  get size (): number {
    return this.entries.size
  }

  has (peer: string): boolean {
    return this.entries.has(peer)
  }
}
