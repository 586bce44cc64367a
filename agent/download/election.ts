import { createHash } from 'node:crypto'

/**
 * Rendezvous (highest random weight) hashing: the candidate whose hash with
 * the chunk scores highest wins. Every peer that sees the same candidates
 * elects the same one, and a candidate that leaves moves only its own
 * chunks to others.
 */
export function rendezvousWinner (packageId: string, index: number, candidates: Iterable<string>): string | undefined {
  let best: string | undefined
  let bestScore = -1n
  for (const candidate of candidates) {
    const score = createHash('sha256').update(`${packageId}\n${index}\n${candidate}`).digest().readBigUInt64BE(0)
    if (score > bestScore || (score === bestScore && best !== undefined && candidate < best)) {
      best = candidate
      bestScore = score
    }
  }
  return best
}

/** Devices of a site that fetch a package's chunks from the origin; the rest take them from peers. */
export const DEFAULT_ORIGIN_FETCHERS = 8

/**
 * Whether a device is one of a package's origin fetchers in a site of
 * `siteSize` devices: a hash of (package, peer) under K / N, so about K
 * devices are, every device that knows the site's size finds the same ones
 * without a word exchanged, and each package spreads the role anew. In a
 * site of K devices or fewer every device is one.
 */
export function isOriginFetcher (packageId: string, peer: string, fetchers: number, siteSize: number): boolean {
  if (siteSize <= fetchers) return true
  const score = createHash('sha256').update(`origin-fetcher\n${packageId}\n${peer}`).digest().readBigUInt64BE(0)
  return Number(score >> 11n) / 2 ** 53 < fetchers / siteSize
}

export const DEFAULT_GATHER_MS = 2000
export const DEFAULT_ELECTION_TIMEOUT_MS = 10_000
export const DEFAULT_FETCH_TIMEOUT_MS = 60_000

export interface OriginElectionInit {
  packageId: string
  /** This device's peer id. */
  self: string
  now: () => number
  /**
   * After joining, no origin fetch starts for this long, so that every
   * downloader of the site has said it is one and all elect alike.
   * @default 2000
   */
  gatherMs?: number
  /**
   * What ends the gather once its time has passed: the clock itself, or a
   * call to `expireGather` by the caller — the swarm makes that call from a
   * turn of the event loop after the messages that arrived meanwhile have
   * been read, so that a device whose process stalled past the gather does
   * not decide from the little it had read before the stall. @default 'clock'
   */
  gatherEndsBy?: 'clock' | 'caller'
  /**
   * How long a device with nothing else to do waits for the elected peer to
   * fetch a chunk before fetching it itself. @default 10000
   */
  electionTimeoutMs?: number
  /** How long a peer that announced an origin fetch is given to announce the chunk. @default 60000 */
  fetchTimeoutMs?: number
  /**
   * Origin fetchers per package in a large site: only they are elected, so
   * that devices that each see a part of the site (a bounded peer set) do
   * not elect a chunk each to a different neighbour. @default DEFAULT_ORIGIN_FETCHERS
   */
  originFetchers?: number
  /** Devices in the site, this one included, as far as this device knows. @default () => 1 (every device a fetcher) */
  siteSize?: () => number
  /**
   * Origin fetchers of the package this device knows in its site, itself
   * not included: once all of them downloading are its candidates, a
   * fetcher's gather may end early. @default () => Infinity (the whole gather)
   */
  siteFetchers?: () => number
  /**
   * Connected peers that could pass a chunk on to this device. With none, a
   * device that is no origin fetcher has nobody to wait for: it falls back
   * to the origin after the election timeout, not the fetch timeout.
   * @default () => Infinity
   */
  peersInSight?: () => number
}

export type OriginDecision =
  | { action: 'fetch', reason: 'elected' | 'fallback' | 'spare' }
  | { action: 'wait', until?: number }

/**
 * Decides, for a chunk no site peer holds, whether this device fetches it
 * from the origin now: when it is the elected downloader, or when the
 * elected one let it wait too long. A peer that misses a deadline is taken
 * out of the elections until it shows progress again, so its other chunks
 * move at once rather than one timeout each.
 */
export class OriginElection {
  private readonly packageId: string
  readonly self: string
  private readonly now: () => number
  private gatherUntil: number
  private readonly gatherEndsByCaller: boolean
  private gatherExpired = false
  private readonly electionTimeoutMs: number
  private readonly fetchTimeoutMs: number
  private readonly candidates = new Set<string>()
  private readonly stalled = new Set<string>()
  private readonly announced = new Map<number, { peer: string, at: number }>()
  private readonly waitingSince = new Map<number, number>()
  private readonly winners = new Map<number, string | undefined>()
  private readonly runnersUp = new Map<number, string>()
  /** When each peer last showed it works (a `have` or a `fetching`). */
  private readonly lastProgress = new Map<string, number>()
  /** When a chunk last reached this device or a peer it hears of: the site is making progress. */
  private lastSiteProgress = Number.NEGATIVE_INFINITY
  private readonly originFetchers: number
  private readonly siteSize: () => number
  private readonly siteFetchers: () => number
  private readonly peersInSight: () => number
  private fetchersFor = 0
  private readonly fetchers = new Map<string, boolean>()

  constructor (init: OriginElectionInit) {
    this.packageId = init.packageId
    this.self = init.self
    this.now = init.now
    this.gatherUntil = init.now() + (init.gatherMs ?? DEFAULT_GATHER_MS)
    this.gatherEndsByCaller = init.gatherEndsBy === 'caller'
    this.electionTimeoutMs = init.electionTimeoutMs ?? DEFAULT_ELECTION_TIMEOUT_MS
    this.fetchTimeoutMs = init.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS
    this.originFetchers = init.originFetchers ?? DEFAULT_ORIGIN_FETCHERS
    this.siteSize = init.siteSize ?? (() => 1)
    this.siteFetchers = init.siteFetchers ?? (() => Number.POSITIVE_INFINITY)
    this.peersInSight = init.peersInSight ?? (() => Number.POSITIVE_INFINITY)
  }

  /** Whether the peer is one of this package's origin fetchers at the site's current size. */
  isFetcher (peer: string): boolean {
    const size = Math.max(1, this.siteSize())
    if (size !== this.fetchersFor) {
      this.fetchersFor = size
      this.fetchers.clear()
      this.clearWinners()
    }
    let fetcher = this.fetchers.get(peer)
    if (fetcher === undefined) {
      fetcher = isOriginFetcher(this.packageId, peer, this.originFetchers, size)
      this.fetchers.set(peer, fetcher)
    }
    return fetcher
  }

  /** The origin fetchers among this device and its candidates that are not stalled. */
  private eligible (except?: string): string[] {
    const out: string[] = []
    if (this.isFetcher(this.self) && this.self !== except) out.push(this.self)
    for (const candidate of this.candidates) if (candidate !== except && !this.stalled.has(candidate) && this.isFetcher(candidate)) out.push(candidate)
    return out
  }

  private clearWinners (): void {
    this.winners.clear()
    this.runnersUp.clear()
  }

  /** Whether origin fetches still wait for the site's downloaders to make themselves known. */
  get gathering (): boolean {
    if (this.gatherExpired) return false
    return this.gatherEndsByCaller || this.now() < this.gatherUntil
  }

  /** Ends the gather if its time has passed (with `gatherEndsBy: 'caller'`). */
  expireGather (): void {
    if (this.now() >= this.gatherUntil) this.gatherExpired = true
  }

  /**
   * Every connected peer has said whether it downloads: nobody is left to
   * wait for. Not so for an origin fetcher of a large site: its fellow
   * fetchers may still be connecting to it (they dial each other as their
   * downloads start), and it gathers until all of them it knows of are its
   * candidates, or for the whole time, so that all of them elect among all.
   */
  endGather (): void {
    if (Math.max(1, this.siteSize()) > this.originFetchers && this.isFetcher(this.self)) {
      let fellows = 0
      for (const candidate of this.candidates) if (this.isFetcher(candidate)) fellows++
      if (fellows < this.siteFetchers()) return
    }
    this.gatherExpired = true
  }

  /** A peer that downloads the package (and so takes part in elections). */
  addCandidate (peer: string): void {
    if (peer === this.self || this.candidates.has(peer)) return
    this.candidates.add(peer)
    this.clearWinners()
  }

  /** The peer stopped downloading or left: its chunks are elected among the others, its announcements forgotten. */
  removeCandidate (peer: string): void {
    this.lastProgress.delete(peer)
    for (const [index, announcement] of this.announced) if (announcement.peer === peer) this.announced.delete(index)
    this.stalled.delete(peer)
    if (this.candidates.delete(peer)) this.clearWinners()
  }

  /** The peer said it fetches this chunk from the origin. */
  fetching (peer: string, index: number): void {
    this.announced.set(index, { peer, at: this.now() })
    this.progress(peer)
  }

  /** The peer showed it is alive and working (a `have` or a `fetching`). */
  progress (peer: string): void {
    this.lastProgress.set(peer, this.now())
    this.lastSiteProgress = this.now()
    if (this.stalled.delete(peer)) this.clearWinners()
  }

  /**
   * The chunk is held by someone now: nothing to decide for it. `bySite`
   * says whether the site brought it (a peer's holding, or this device's
   * fetch from a peer): a chunk this device fetched from the origin itself
   * is no sign that the site's fetchers are at work, and must not put off
   * the fallback of the chunks still waiting.
   */
  settled (index: number, bySite = true): void {
    if (bySite) this.lastSiteProgress = this.now()
    this.announced.delete(index)
    this.waitingSince.delete(index)
  }

  private markStalled (peer: string): void {
    if (peer === this.self || this.stalled.has(peer)) return
    this.stalled.add(peer)
    this.clearWinners()
  }

  /**
   * The elected downloader of a chunk among the origin fetchers this device
   * knows (itself and its candidates that are not stalled); undefined when
   * it knows none: the chunk comes from peers, or by fallback.
   */
  winner (index: number): string | undefined {
    this.isFetcher(this.self)
    if (this.winners.has(index)) return this.winners.get(index)
    const winner = rendezvousWinner(this.packageId, index, this.eligible())
    this.winners.set(index, winner)
    return winner
  }

  /**
   * Whether this device, which has fetched or started every chunk elected to
   * it and still has origin capacity, may take over a chunk elected to
   * another peer that has not started it: the peers' shares of the election
   * are uneven, and without this the WAN would idle while the most loaded
   * peer works through its share alone. The taker announces the fetch, so
   * the elected peer skips the chunk; the caller takes chunks from the end
   * of the list while elected peers work from its start, so both rarely
   * start the same chunk at once.
   */
  mayTakeOver (index: number): boolean {
    const winner = this.winner(index)
    return !this.gathering && !this.isAnnounced(index) && winner !== undefined && winner !== this.self && this.isFetcher(this.self)
  }

  /** Whether a peer said it fetches the chunk, recently enough to be waited for. */
  isAnnounced (index: number): boolean {
    const announcement = this.announced.get(index)
    return announcement !== undefined && this.now() < announcement.at + this.fetchTimeoutMs
  }

  /**
   * Whether this device gives its own origin fetch of a chunk up to a peer
   * that said it fetches the same chunk: two devices that started it before
   * they heard of each other (a late joiner, a peer set that just changed,
   * a stalled process) both see both announcements, and the one the chunk's
   * election between the two passes over stops, so the WAN carries one copy.
   */
  yieldsTo (peer: string, index: number): boolean {
    return peer !== this.self && rendezvousWinner(this.packageId, index, [this.self, peer]) === peer
  }

  isElected (index: number): boolean {
    return this.winner(index) === this.self
  }

  /**
   * Whether this device would win the chunk if its elected peer were out:
   * devices with origin capacity to spare prefer such chunks, so that two of
   * them rarely take over the same one.
   */
  isRunnerUp (index: number): boolean {
    if (!this.isFetcher(this.self)) return false
    let runnerUp = this.runnersUp.get(index)
    if (runnerUp === undefined) {
      runnerUp = rendezvousWinner(this.packageId, index, this.eligible(this.winner(index))) ?? this.self
      this.runnersUp.set(index, runnerUp)
    }
    return runnerUp === this.self
  }

  /**
   * @param starving whether the device has nothing in progress: only then
   *   does waiting for another peer cost it time, so only then does the
   *   fallback clock run.
   */
  decide (index: number, starving: boolean): OriginDecision {
    const now = this.now()
    const announcement = this.announced.get(index)
    if (announcement !== undefined) {
      const until = announcement.at + this.fetchTimeoutMs
      if (now < until) return { action: 'wait', until }
      this.announced.delete(index)
      this.markStalled(announcement.peer)
    }
    if (this.gathering) return { action: 'wait', until: this.gatherUntil }
    const winner = this.winner(index)
    if (winner === this.self) return { action: 'fetch', reason: 'elected' }
    if (!starving) return { action: 'wait' }
    const since = this.waitingSince.get(index) ?? now
    this.waitingSince.set(index, since)
    // With no fetcher in sight, or as a device that is none in a large site,
    // the chunk is waited for while the site makes progress: its fetchers
    // are at work out of this device's sight, and the chunk comes through
    // peers. Only a site silent for as long as an origin fetch may take
    // sends it to the origin itself.
    // A fetch takes long on a slow WAN shared by every fetcher (a wave of 1 MiB chunks at 20 Mbit/s takes
    // seconds each), so without a fetcher in sight the wait is an origin fetch's, not an election's.
    // A device with no peer in sight has nobody to bring it the chunk: it waits as for an election only.
    const until = (winner === undefined || !this.isFetcher(this.self)) && this.peersInSight() > 0
      ? Math.max(since, this.lastSiteProgress) + this.fetchTimeoutMs
      : since + this.electionTimeoutMs
    if (now < until) return { action: 'wait', until }
    this.waitingSince.delete(index)
    // A winner that showed progress lately is busy, not gone: this chunk is
    // taken over (and announced), but its other chunks stay with it. Moving
    // them all would have two devices fetch them whenever a loaded machine
    // makes a live peer slow.
    if (winner !== undefined && now - (this.lastProgress.get(winner) ?? Number.NEGATIVE_INFINITY) >= this.electionTimeoutMs) this.markStalled(winner)
    return { action: 'fetch', reason: 'fallback' }
  }
}
