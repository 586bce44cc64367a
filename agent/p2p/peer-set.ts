/** Connections an agent keeps to its site peers, inbound and outbound together. */
export const DEFAULT_MAX_PEERS = 16
/** How often one connection is swapped for a peer not connected yet. */
export const DEFAULT_ROTATION_INTERVAL_MS = 30_000
/** A connection younger than this is not rotated out: it has not had the time to be useful. */
export const DEFAULT_MIN_CONNECTION_AGE_MS = 10_000

export interface PeerSetPolicyInit {
  /** Connections kept at most; inbound ones past it are refused. @default DEFAULT_MAX_PEERS */
  maxPeers?: number
  /**
   * Connections this agent fills up to by dialing; the rest of `maxPeers` is
   * left for peers that dial in. Every connection is one side's dial, so a
   * site whose agents each dial D has an average degree of 2 D: at 3/8 of
   * the bound that is 3/4 of it, and an agent that starts late still finds
   * peers with room. @default ceil(maxPeers * 3 / 8)
   */
  dialTarget?: number
  /** @default DEFAULT_ROTATION_INTERVAL_MS; 0: never rotate */
  rotationIntervalMs?: number
  /** @default DEFAULT_MIN_CONNECTION_AGE_MS */
  minConnectionAgeMs?: number
  now: () => number
  /** Uniform in [0, 1): picks among equals and spreads rotations so a site does not rotate in step. */
  random: () => number
}

/** A peer this agent is connected to. */
export interface ConnectedPeer {
  peer: string
  /** When the connection opened. */
  since: number
  /** Chunks it holds that this agent's downloads lack. */
  usefulChunks: number
  /** A site cache (a distribution point) holds what the site's tasks need: kept, and dialed first. */
  siteCache: boolean
  /** A fellow origin fetcher of a package both download: the fetchers keep connections to each other. */
  originFetcher?: boolean
}

/** A peer this agent may dial now (known, not connected, not backing off, admitted by the gate). */
export interface DialCandidate {
  peer: string
  siteCache: boolean
  /** A fellow origin fetcher of a package both download: dialed at once, in place of a less useful connection if need be. */
  originFetcher?: boolean
}

const preferred = (peer: { siteCache: boolean, originFetcher?: boolean }): boolean => peer.siteCache || peer.originFetcher === true

export interface PeerSetPlan {
  /** Peers to dial, best first. */
  dial: string[]
  /** Connections to close. */
  drop: string[]
}

/**
 * Which site peers this agent keeps connections to: a bounded, rotating
 * partial view (HyParView's active view) rather than a full mesh. It fills
 * up to the dial target, site caches first and the rest at random, so that
 * the site's connections form a random graph that stays connected; and
 * every rotation interval it swaps the least useful connection (holding
 * nothing this agent lacks, the oldest among equals) for a peer it has not
 * seen yet, so that a chunk held in one corner of the site reaches the rest
 * and no group of agents stays closed on itself. A site's origin fetchers
 * keep connections to each other (all but two of the bound), each swapping a
 * less useful connection for a fellow fetcher at once, so that they elect
 * alike: a fetcher that sees only some of the others would fetch chunks
 * elected to those it does not see. Pure: it is told who is
 * connected and who may be dialed, and says whom to dial and whom to drop.
 */
export class PeerSetPolicy {
  readonly maxPeers: number
  readonly dialTarget: number
  private readonly rotationIntervalMs: number
  private readonly minConnectionAgeMs: number
  private readonly now: () => number
  private readonly random: () => number
  private nextRotation: number

  constructor (init: PeerSetPolicyInit) {
    this.maxPeers = Math.max(1, init.maxPeers ?? DEFAULT_MAX_PEERS)
    this.dialTarget = Math.min(this.maxPeers, Math.max(1, init.dialTarget ?? Math.ceil(this.maxPeers * 3 / 8)))
    this.rotationIntervalMs = init.rotationIntervalMs ?? DEFAULT_ROTATION_INTERVAL_MS
    this.minConnectionAgeMs = init.minConnectionAgeMs ?? DEFAULT_MIN_CONNECTION_AGE_MS
    this.now = init.now
    this.random = init.random
    this.nextRotation = this.rotationIntervalMs > 0 ? this.now() + this.jittered() : Number.POSITIVE_INFINITY
  }

  /** Between three quarters and five quarters of the interval. */
  private jittered (): number {
    return Math.round(this.rotationIntervalMs * (0.75 + this.random() / 2))
  }

  /** When the next rotation is due (the caller plans again then). */
  get nextRotationAt (): number {
    return this.nextRotation
  }

  /**
   * @param connected the peers connected now
   * @param candidates peers that may be dialed now
   * @param dialing dials under way (they count as connections to come)
   */
  plan (connected: readonly ConnectedPeer[], candidates: readonly DialCandidate[], dialing = 0): PeerSetPlan {
    const now = this.now()
    const drop: string[] = []
    const dial: string[] = []
    const chosen = new Set<string>()
    const take = (count: number): void => {
      for (const peer of this.order(candidates.filter(candidate => !chosen.has(candidate.peer))).slice(0, Math.max(0, count))) {
        chosen.add(peer)
        dial.push(peer)
      }
    }
    // Over the bound (a burst of inbound connections that crossed): the least useful go.
    const ranked = this.rankForDrop(connected, now, true)
    for (let excess = connected.length - this.maxPeers; excess > 0 && ranked.length > 0; excess--) drop.push(ranked.shift()!.peer)
    take(this.dialTarget - (connected.length - drop.length) - dialing)
    // Fellow fetchers fill up to all but two of the bound; past that each takes the place of the least useful other connection.
    const fellows = candidates.filter(candidate => candidate.originFetcher === true && !chosen.has(candidate.peer))
    let preferredSlots = this.maxPeers - 2 - connected.filter(peer => peer.originFetcher === true).length - dial.length
    if (fellows.length > 0 && preferredSlots > 0) {
      // Young connections too: the fetchers meet when a download starts, which is when every connection is young.
      const replaceable = this.rankForDrop(connected.filter(peer => !drop.includes(peer.peer)), now, false, 0)
      for (const fellow of this.order(fellows)) {
        if (preferredSlots <= 0) break
        if (connected.length - drop.length + dial.length + dialing >= this.maxPeers - 2) {
          const victim = replaceable.shift()
          if (victim === undefined) break
          drop.push(victim.peer)
        }
        chosen.add(fellow)
        dial.push(fellow)
        preferredSlots--
      }
    }
    if (now >= this.nextRotation) {
      this.nextRotation = now + this.jittered()
      const remaining = candidates.filter(candidate => !chosen.has(candidate.peer))
      if (connected.length - drop.length >= this.dialTarget && remaining.length > 0) {
        const victim = this.rankForDrop(connected.filter(peer => !drop.includes(peer.peer)), now, false)[0]
        if (victim !== undefined) {
          drop.push(victim.peer)
          take(1)
        }
      }
    }
    return { dial, drop }
  }

  /** Site caches and fellow fetchers first, then a random order. */
  private order (candidates: readonly DialCandidate[]): string[] {
    const keyed = candidates.map(candidate => ({ peer: candidate.peer, key: (preferred(candidate) ? 0 : 1) + this.random() }))
    keyed.sort((a, b) => a.key - b.key)
    return keyed.map(entry => entry.peer)
  }

  /**
   * Connections in the order they would be dropped: the least useful first,
   * the oldest among equals. Site caches and connections too young to have
   * shown their use are spared, unless `all`.
   */
  private rankForDrop (connected: readonly ConnectedPeer[], now: number, all: boolean, minAgeMs = this.minConnectionAgeMs): ConnectedPeer[] {
    const eligible = all ? [...connected] : connected.filter(peer => !preferred(peer) && now - peer.since >= minAgeMs)
    return eligible.sort((a, b) => Number(preferred(a)) - Number(preferred(b)) || a.usefulChunks - b.usefulChunks || a.since - b.since)
  }
}
