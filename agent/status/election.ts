import { createHash } from 'node:crypto'
import { DEFAULT_LIVENESS_MS } from '../protocols/status/constants.js'

export interface RelayElectionInit {
  /** This agent's peer id. */
  self: string
  /** Mixed into every score so that two sites (topics) do not pick the same kind of peer. */
  salt: string
  /** A peer not heard for this long is gone. @default DEFAULT_LIVENESS_MS */
  livenessMs?: number
  /**
   * Agents besides the relay that keep saying they are there, ready to take
   * over; the others stay quiet, so a site's heartbeats do not grow with it.
   * @default DEFAULT_RELAY_STANDBYS
   */
  standbys?: number
  now: () => number
}

/** Relay candidates that heartbeat besides the relay. */
export const DEFAULT_RELAY_STANDBYS = 2

interface Candidate {
  reachesCoordinator: boolean
  heardAt: number
}

/**
 * Who relays a site's status records to the coordinator: among the agents
 * that currently reach it (this one included), the one with the lowest
 * rendezvous score, a hash of (salt, peer id). Every agent that heard the
 * same heartbeats elects the same relay; when the relay's heartbeats stop
 * (or it says it lost the coordinator) the next lowest takes over. Pure: it
 * is told what was heard and when, and never sends anything.
 */
export class RelayElection {
  readonly self: string
  private readonly salt: string
  private readonly livenessMs: number
  private readonly standbys: number
  private readonly now: () => number
  private readonly peers = new Map<string, Candidate>()
  private readonly scores = new Map<string, string>()
  private selfReaches = false

  constructor (init: RelayElectionInit) {
    this.self = init.self
    this.salt = init.salt
    this.livenessMs = init.livenessMs ?? DEFAULT_LIVENESS_MS
    this.standbys = init.standbys ?? DEFAULT_RELAY_STANDBYS
    this.now = init.now
  }

  /** A peer's heartbeat: it is alive, and reaches the coordinator or not. */
  heard (peer: string, reachesCoordinator: boolean): void {
    if (peer === this.self) return
    this.peers.set(peer, { reachesCoordinator, heardAt: this.now() })
  }

  /** The peer disconnected: it stops counting at once, without waiting for its heartbeats to age. */
  left (peer: string): void {
    this.peers.delete(peer)
    this.scores.delete(peer)
  }

  setSelfReaches (reaches: boolean): void {
    this.selfReaches = reaches
  }

  get reachesCoordinator (): boolean {
    return this.selfReaches
  }

  private score (peer: string): string {
    let score = this.scores.get(peer)
    if (score === undefined) {
      score = createHash('sha256').update(`${this.salt}\n${peer}`).digest('hex')
      this.scores.set(peer, score)
    }
    return score
  }

  private alive (candidate: Candidate, now: number): boolean {
    return now - candidate.heardAt < this.livenessMs
  }

  /** Peers heard recently (this one not included). */
  livePeers (): string[] {
    const now = this.now()
    return [...this.peers].filter(([, candidate]) => this.alive(candidate, now)).map(([peer]) => peer)
  }

  /** The relay now, or undefined when no agent of the site is known to reach the coordinator. */
  relay (): string | undefined {
    const now = this.now()
    let best: string | undefined
    let bestScore = ''
    const consider = (peer: string): void => {
      const score = this.score(peer)
      if (best === undefined || score < bestScore) {
        best = peer
        bestScore = score
      }
    }
    if (this.selfReaches) consider(this.self)
    for (const [peer, candidate] of this.peers) {
      if (!this.alive(candidate, now)) {
        // Forgotten once gone: the map holds live peers and the recently gone only.
        if (now - candidate.heardAt > 10 * this.livenessMs) this.left(peer)
        continue
      }
      if (candidate.reachesCoordinator) consider(peer)
    }
    return best
  }

  /**
   * Whether this agent's heartbeats matter: it reaches the coordinator and
   * fewer than the relay and its standbys that are heard now would win
   * before it. The others are quiet; when heartbeats of those ahead stop,
   * the next in line hears fewer of them and speaks up, so the site always
   * hears its relay and the standbys, and never more.
   */
  shouldHeartbeat (): boolean {
    if (!this.selfReaches) return false
    const now = this.now()
    const own = this.score(this.self)
    let ahead = 0
    for (const [peer, candidate] of this.peers) {
      if (candidate.reachesCoordinator && this.alive(candidate, now) && this.score(peer) < own) ahead++
      if (ahead > this.standbys) return false
    }
    return true
  }

  isRelay (): boolean {
    return this.relay() === this.self
  }

  /** When the next live peer's heartbeats run out (the relay may change then), or undefined. */
  nextExpiryAt (): number | undefined {
    const now = this.now()
    let next: number | undefined
    for (const candidate of this.peers.values()) {
      if (!this.alive(candidate, now)) continue
      const at = candidate.heardAt + this.livenessMs
      if (next === undefined || at < next) next = at
    }
    return next
  }
}
