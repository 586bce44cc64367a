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
   * How long a device with nothing else to do waits for the elected peer to
   * fetch a chunk before fetching it itself. @default 10000
   */
  electionTimeoutMs?: number
  /** How long a peer that announced an origin fetch is given to announce the chunk. @default 60000 */
  fetchTimeoutMs?: number
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
  private readonly electionTimeoutMs: number
  private readonly fetchTimeoutMs: number
  private readonly candidates = new Set<string>()
  private readonly stalled = new Set<string>()
  private readonly announced = new Map<number, { peer: string, at: number }>()
  private readonly waitingSince = new Map<number, number>()
  private readonly winners = new Map<number, string>()
  private readonly runnersUp = new Map<number, string>()
  /** When each peer last showed it works (a `have` or a `fetching`). */
  private readonly lastProgress = new Map<string, number>()

  constructor (init: OriginElectionInit) {
    this.packageId = init.packageId
    this.self = init.self
    this.now = init.now
    this.gatherUntil = init.now() + (init.gatherMs ?? DEFAULT_GATHER_MS)
    this.electionTimeoutMs = init.electionTimeoutMs ?? DEFAULT_ELECTION_TIMEOUT_MS
    this.fetchTimeoutMs = init.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS
  }

  private clearWinners (): void {
    this.winners.clear()
    this.runnersUp.clear()
  }

  /** Whether origin fetches still wait for the site's downloaders to make themselves known. */
  get gathering (): boolean {
    return this.now() < this.gatherUntil
  }

  /** Every connected peer has said whether it downloads: nobody is left to wait for. */
  endGather (): void {
    this.gatherUntil = Math.min(this.gatherUntil, this.now())
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
    if (this.stalled.delete(peer)) this.clearWinners()
  }

  /** The chunk is held by someone now: nothing to decide for it. */
  settled (index: number): void {
    this.announced.delete(index)
    this.waitingSince.delete(index)
  }

  private markStalled (peer: string): void {
    if (peer === this.self || this.stalled.has(peer)) return
    this.stalled.add(peer)
    this.clearWinners()
  }

  /** The elected downloader of a chunk among this device and the candidates that are not stalled. */
  winner (index: number): string {
    let winner = this.winners.get(index)
    if (winner === undefined) {
      const eligible = [this.self]
      for (const candidate of this.candidates) if (!this.stalled.has(candidate)) eligible.push(candidate)
      winner = rendezvousWinner(this.packageId, index, eligible) ?? this.self
      this.winners.set(index, winner)
    }
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
    return this.now() >= this.gatherUntil && !this.isAnnounced(index) && this.winner(index) !== this.self
  }

  /** Whether a peer said it fetches the chunk, recently enough to be waited for. */
  isAnnounced (index: number): boolean {
    const announcement = this.announced.get(index)
    return announcement !== undefined && this.now() < announcement.at + this.fetchTimeoutMs
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
    let runnerUp = this.runnersUp.get(index)
    if (runnerUp === undefined) {
      const winner = this.winner(index)
      const others = [this.self, ...this.candidates].filter(candidate => candidate !== winner && !this.stalled.has(candidate))
      runnerUp = rendezvousWinner(this.packageId, index, others) ?? this.self
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
    if (now < this.gatherUntil) return { action: 'wait', until: this.gatherUntil }
    const winner = this.winner(index)
    if (winner === this.self) return { action: 'fetch', reason: 'elected' }
    if (!starving) return { action: 'wait' }
    const since = this.waitingSince.get(index) ?? now
    this.waitingSince.set(index, since)
    const until = since + this.electionTimeoutMs
    if (now < until) return { action: 'wait', until }
    this.waitingSince.delete(index)
    // A winner that showed progress lately is busy, not gone: this chunk is
    // taken over (and announced), but its other chunks stay with it. Moving
    // them all would have two devices fetch them whenever a loaded machine
    // makes a live peer slow.
    if (now - (this.lastProgress.get(winner) ?? Number.NEGATIVE_INFINITY) >= this.electionTimeoutMs) this.markStalled(winner)
    return { action: 'fetch', reason: 'fallback' }
  }
}
