import { OriginElection, type OriginElectionInit } from './election.js'

export const DEFAULT_MAX_REQUESTS_PER_PEER = 8
export const DEFAULT_MAX_REQUESTS = 16
export const DEFAULT_MAX_ORIGIN_REQUESTS = 4
export const DEFAULT_PEER_FAILURES_BEFORE_REST = 3
export const DEFAULT_PEER_REST_MS = 5000
export const DEFAULT_SPARE_AFTER_MS = 500
export const DEFAULT_PEER_BUSY_PAUSE_MS = 1000

export type RequestSource = { kind: 'peer', peer: string } | { kind: 'origin', reason: 'elected' | 'fallback' | 'spare' }

/** A chunk to fetch now, from where. */
export interface PickedRequest {
  id: number
  index: number
  source: RequestSource
  /** Endgame: the chunk is already requested elsewhere. */
  duplicate: boolean
}

/** Why a request ended without the chunk. */
export type FailureKind =
  /** The peer said it does not hold the chunk. */
  | 'not-cached'
  /** The peer refused for another reason (banned us) or the transfer broke. */
  | 'error'
  /** The peer asked to be left alone for a while (busy, over its request budget): paused, not held against it. */
  | 'busy'
  /** The peer sent bytes that fail the chunk's hash. */
  | 'bad-data'
  /** This side gave the request up (endgame duplicate, shutdown). */
  | 'cancelled'

export interface PiecePickerInit extends Omit<OriginElectionInit, 'now'> {
  chunkCount: number
  /** Chunks already held. */
  held?: Iterable<number>
  now: () => number
  /** Uniform in [0, 1): breaks ties. */
  random: () => number
  /** @default DEFAULT_MAX_REQUESTS_PER_PEER */
  maxRequestsPerPeer?: number
  /** Requests in flight over every source. @default DEFAULT_MAX_REQUESTS */
  maxRequests?: number
  /** @default DEFAULT_MAX_ORIGIN_REQUESTS */
  maxOriginRequests?: number
  /** Failures in a row after which a peer is rested. @default 3 */
  peerFailuresBeforeRest?: number
  /** @default 5000 */
  peerRestMs?: number
  /**
   * How long origin capacity must go unused, with this device's own share
   * all started, before it takes chunks elected to others. @default 500
   */
  spareAfterMs?: number
  /** Pause after a `busy` answer that names no wait. @default 1000 */
  peerBusyPauseMs?: number
}

interface PeerState {
  bits: Uint8Array
  interested: boolean
  inFlight: number
  failures: number
  /** Rested after failures: its chunks may go to the origin meanwhile. */
  restUntil: number
  /** Paused at its own request (busy): its chunks wait for it. */
  pausedUntil: number
}

const hasBit = (bits: Uint8Array, index: number): boolean => (bits[index >> 3] & (0x80 >> (index & 7))) !== 0
const setBit = (bits: Uint8Array, index: number): void => { bits[index >> 3] |= 0x80 >> (index & 7) }
const clearBit = (bits: Uint8Array, index: number): void => { bits[index >> 3] &= ~(0x80 >> (index & 7)) }

/**
 * Decides which chunk to ask of which source; it is not responsible for
 * sending nor receiving pieces (kraken's scheduler policy). Rarest first
 * among connected peers with a random tie-break; a bounded number of
 * requests per peer, to the origin and in all; chunks no peer holds go to
 * the origin through the election; in the endgame, chunks already requested
 * are asked of a second peer and the slower copy is cancelled.
 */
export class PiecePicker {
  readonly chunkCount: number
  private readonly now: () => number
  private readonly random: () => number
  private readonly maxPerPeer: number
  private readonly maxRequests: number
  private readonly maxOrigin: number
  private readonly failuresBeforeRest: number
  private readonly restMs: number
  private readonly busyPauseMs: number
  readonly election: OriginElection
  private readonly held: Uint8Array
  private heldCount = 0
  /** How many usable peers hold each chunk. */
  private readonly availability: Int32Array
  private readonly peers = new Map<string, PeerState>()
  private readonly banned = new Set<string>()
  private readonly requests = new Map<number, PickedRequest>()
  private readonly byChunk = new Map<number, Set<number>>()
  /** Chunks the origin may not be asked for again before this time (after a failure). */
  private readonly originNotBefore = new Map<number, number>()
  private originInFlight = 0
  /** Since when this device's own share of origin chunks has been all started while it had origin capacity left. */
  private spareSince?: number
  private readonly spareAfterMs: number
  private nextId = 1
  private wake?: number

  constructor (init: PiecePickerInit) {
    this.chunkCount = init.chunkCount
    this.now = init.now
    this.random = init.random
    this.maxPerPeer = init.maxRequestsPerPeer ?? DEFAULT_MAX_REQUESTS_PER_PEER
    this.maxRequests = init.maxRequests ?? DEFAULT_MAX_REQUESTS
    this.maxOrigin = init.maxOriginRequests ?? DEFAULT_MAX_ORIGIN_REQUESTS
    this.failuresBeforeRest = init.peerFailuresBeforeRest ?? DEFAULT_PEER_FAILURES_BEFORE_REST
    this.restMs = init.peerRestMs ?? DEFAULT_PEER_REST_MS
    this.spareAfterMs = init.spareAfterMs ?? DEFAULT_SPARE_AFTER_MS
    this.busyPauseMs = init.peerBusyPauseMs ?? DEFAULT_PEER_BUSY_PAUSE_MS
    this.election = new OriginElection({ ...init, now: init.now })
    this.held = new Uint8Array(Math.ceil(init.chunkCount / 8))
    this.availability = new Int32Array(init.chunkCount)
    for (const index of init.held ?? []) this.markHeld(index, false)
  }

  get complete (): boolean {
    return this.heldCount === this.chunkCount
  }

  get missing (): number {
    return this.chunkCount - this.heldCount
  }

  get inFlight (): number {
    return this.requests.size
  }

  isHeld (index: number): boolean {
    return hasBit(this.held, index)
  }

  isBanned (peer: string): boolean {
    return this.banned.has(peer)
  }

  /** Whether a usable peer says it holds the chunk. */
  heldByPeers (index: number): boolean {
    return this.availability[index] > 0
  }

  get gathering (): boolean {
    return this.election.gathering
  }

  /** Ends the election's gather once its time has passed (see `gatherEndsBy`). */
  expireGather (): void {
    this.election.expireGather()
  }

  /** Ends the election's gather early: every connected peer has answered. */
  endGather (): void {
    this.election.endGather()
  }

  /** `bySite`: the chunk came through the site (a peer), not from this device's own origin fetch or its cache. */
  private markHeld (index: number, bySite: boolean): void {
    if (index < 0 || index >= this.chunkCount || hasBit(this.held, index)) return
    setBit(this.held, index)
    this.heldCount++
    this.election.settled(index, bySite)
  }

  private peer (id: string): PeerState | undefined {
    if (this.banned.has(id)) return undefined
    let state = this.peers.get(id)
    if (state === undefined) {
      state = { bits: new Uint8Array(this.held.byteLength), interested: false, inFlight: 0, failures: 0, restUntil: 0, pausedUntil: 0 }
      this.peers.set(id, state)
    }
    return state
  }

  /** A peer's whole holding (its `interested` or `bitfield` message). */
  peerBitfield (id: string, bits: Uint8Array, interested?: boolean): void {
    const state = this.peer(id)
    if (state === undefined) return
    for (let index = 0; index < this.chunkCount; index++) {
      const before = hasBit(state.bits, index)
      const after = hasBit(bits, index)
      if (before !== after) this.availability[index] += after ? 1 : -1
      if (after) this.election.settled(index)
    }
    state.bits = new Uint8Array(this.held.byteLength)
    state.bits.set(bits.subarray(0, state.bits.byteLength))
    if (interested !== undefined) this.peerInterested(id, interested)
  }

  peerHave (id: string, index: number): void {
    const state = this.peer(id)
    if (state === undefined || index >= this.chunkCount) return
    this.election.progress(id)
    this.election.settled(index)
    if (hasBit(state.bits, index)) return
    setBit(state.bits, index)
    this.availability[index]++
  }

  /**
   * The peer fetches the chunk from the origin. Returns this device's origin
   * request for the same chunk that gives way to the peer's, if any: the
   * caller cancels it, and the chunk is waited for as any announced one.
   */
  peerFetching (id: string, index: number): PickedRequest | undefined {
    if (this.banned.has(id) || index < 0 || index >= this.chunkCount) return undefined
    this.election.fetching(id, index)
    if (hasBit(this.held, index) || !this.election.yieldsTo(id, index)) return undefined
    for (const requestId of this.byChunk.get(index) ?? []) {
      const request = this.requests.get(requestId)!
      if (request.source.kind === 'origin') return request
    }
    return undefined
  }

  peerInterested (id: string, interested: boolean): void {
    const state = this.peer(id)
    if (state === undefined) return
    state.interested = interested
    if (interested) this.election.addCandidate(id)
    else this.election.removeCandidate(id)
  }

  /** The peer disconnected: it is no source and no candidate any more. Its requests fail on their own. */
  peerLeft (id: string): void {
    const state = this.peers.get(id)
    this.election.removeCandidate(id)
    if (state === undefined) return
    for (let index = 0; index < this.chunkCount; index++) if (hasBit(state.bits, index)) this.availability[index]--
    state.bits.fill(0)
    state.interested = false
    if (state.inFlight === 0) this.peers.delete(id)
  }

  /** Never asks this peer again for this download. */
  ban (id: string): void {
    this.peerLeft(id)
    this.banned.add(id)
  }

  private peerUsable (state: PeerState, now: number): boolean {
    return state.inFlight < this.maxPerPeer && state.restUntil <= now && state.pausedUntil <= now
  }

  /**
   * Whether every peer that holds the chunk is resting after failures. Such
   * a chunk is treated as one no peer holds, so a peer that claims chunks
   * and then fails to deliver them (stalls, drops) cannot hold the download.
   */
  private onlyRestingHolders (index: number, resting: PeerState[]): boolean {
    let count = 0
    for (const state of resting) if (hasBit(state.bits, index)) count++
    return count > 0 && count >= this.availability[index]
  }

  /** The requests to start now. */
  next (): PickedRequest[] {
    const now = this.now()
    if (this.requests.size >= this.maxRequests) return []
    this.wake = undefined
    const picks: PickedRequest[] = []
    const pick = (index: number, source: RequestSource, duplicate: boolean): void => {
      const request: PickedRequest = { id: this.nextId++, index, source, duplicate }
      this.requests.set(request.id, request)
      let ids = this.byChunk.get(index)
      if (ids === undefined) {
        ids = new Set()
        this.byChunk.set(index, ids)
      }
      ids.add(request.id)
      if (source.kind === 'peer') this.peers.get(source.peer)!.inFlight++
      else this.originInFlight++
      picks.push(request)
    }
    const free = (): boolean => this.requests.size < this.maxRequests
    const peerCandidates: number[] = []
    const originCandidates: number[] = []
    const resting = [...this.peers.values()].filter(state => state.restUntil > now)
    let unassigned = 0
    for (let index = 0; index < this.chunkCount; index++) {
      if (hasBit(this.held, index) || this.byChunk.has(index)) continue
      unassigned++
      if (this.availability[index] > 0 && (resting.length === 0 || !this.onlyRestingHolders(index, resting))) peerCandidates.push(index)
      else originCandidates.push(index)
    }
    const noteWake = (until: number | undefined): void => {
      if (until !== undefined && (this.wake === undefined || until < this.wake)) this.wake = until
    }
    let ownLeft = 0
    const decideOrigin = (starving: boolean): void => {
      ownLeft = 0
      for (const index of originCandidates) {
        if (this.byChunk.has(index)) continue
        const notBefore = this.originNotBefore.get(index) ?? 0
        if (notBefore > now) {
          noteWake(notBefore)
          continue
        }
        if (!free() || this.originInFlight >= this.maxOrigin) {
          // Only counts what is left: whether there is origin capacity to spare.
          if (!this.election.gathering && this.election.isElected(index)) ownLeft++
          continue
        }
        const decision = this.election.decide(index, starving)
        if (decision.action === 'fetch') {
          pick(index, { kind: 'origin', reason: decision.reason }, false)
          unassigned--
        } else {
          noteWake(decision.until)
        }
      }
    }
    // Origin capacity that this device's own share leaves unused goes to the
    // shares of others, from the end of the list. The first few chunks of
    // each other peer's share are left to it: it starts them next.
    const spareOrigin = (): void => {
      if (ownLeft > 0 || this.election.gathering) {
        this.spareSince = undefined
        return
      }
      if (!free() || this.originInFlight >= this.maxOrigin) return
      const reserved = new Map<string, number>()
      const takeable: number[] = []
      for (const index of originCandidates) {
        if (this.byChunk.has(index) || this.election.isAnnounced(index) || (this.originNotBefore.get(index) ?? 0) > now) continue
        const winner = this.election.winner(index)
        if (winner === undefined || winner === this.election.self) continue
        const count = (reserved.get(winner) ?? 0) + 1
        reserved.set(winner, count)
        if (count > this.maxOrigin) takeable.push(index)
      }
      if (takeable.length === 0) return
      // Only an imbalance that lasts: a share that is about to be started by its peer is not worth a race.
      this.spareSince ??= now
      if (now < this.spareSince + this.spareAfterMs) {
        noteWake(this.spareSince + this.spareAfterMs)
        return
      }
      // Only chunks this device would win after their elected peer: two devices with spare capacity never take the same.
      for (let i = takeable.length - 1; i >= 0; i--) {
        if (!free() || this.originInFlight >= this.maxOrigin) return
        const index = takeable[i]
        if (!this.election.isRunnerUp(index) || !this.election.mayTakeOver(index)) continue
        pick(index, { kind: 'origin', reason: 'spare' }, false)
        unassigned--
      }
    }
    // The origin first: the WAN is what the site waits for, and peers' LAN
    // requests, quick as they are, would otherwise take every free slot.
    decideOrigin(false)
    spareOrigin()
    // Rarest first; the shuffle before the stable sort is the random tie-break.
    this.shuffle(peerCandidates)
    peerCandidates.sort((a, b) => this.availability[a] - this.availability[b])
    for (const index of peerCandidates) {
      if (!free()) break
      const holder = this.holderFor(index, now)
      if (holder === undefined) continue
      pick(index, { kind: 'peer', peer: holder }, false)
      unassigned--
    }
    if (this.requests.size === 0) decideOrigin(true)
    for (const state of this.peers.values()) {
      if (state.restUntil > now) noteWake(state.restUntil)
      if (state.pausedUntil > now) noteWake(state.pausedUntil)
    }
    if (unassigned === 0 && free()) this.endgame(now, pick)
    return picks
  }

  /** Every missing chunk is requested: ask a second peer for those with one source, so a slow peer does not hold the end. */
  private endgame (now: number, pick: (index: number, source: RequestSource, duplicate: boolean) => void): void {
    for (const [index, ids] of this.byChunk) {
      if (this.requests.size >= this.maxRequests) return
      if (ids.size !== 1) continue
      const busy = new Set<string>()
      for (const id of ids) {
        const source = this.requests.get(id)!.source
        if (source.kind === 'peer') busy.add(source.peer)
      }
      const holder = this.holderFor(index, now, busy)
      if (holder !== undefined) pick(index, { kind: 'peer', peer: holder }, true)
    }
  }

  private holderFor (index: number, now: number, exclude?: ReadonlySet<string>): string | undefined {
    let best: string | undefined
    let bestLoad = Number.POSITIVE_INFINITY
    let ties = 0
    for (const [id, state] of this.peers) {
      if (!hasBit(state.bits, index) || !this.peerUsable(state, now) || exclude?.has(id) === true) continue
      if (state.inFlight < bestLoad) {
        best = id
        bestLoad = state.inFlight
        ties = 1
      } else if (state.inFlight === bestLoad) {
        // Reservoir choice among the least loaded: each is equally likely.
        ties++
        if (this.random() * ties < 1) best = id
      }
    }
    return best
  }

  private shuffle (items: number[]): void {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1))
      const swap = items[i]
      items[i] = items[j]
      items[j] = swap
    }
  }

  /** When waiting may end without any other event: the caller calls `next` again then. */
  wakeAt (): number | undefined {
    return this.wake
  }

  private release (request: PickedRequest): void {
    this.requests.delete(request.id)
    const ids = this.byChunk.get(request.index)
    ids?.delete(request.id)
    if (ids?.size === 0) this.byChunk.delete(request.index)
    if (request.source.kind === 'origin') {
      this.originInFlight--
      return
    }
    const state = this.peers.get(request.source.peer)
    if (state === undefined) return
    state.inFlight--
    if (state.inFlight === 0 && !state.interested && state.bits.every(byte => byte === 0)) {
      // A peer that left keeps its entry only while it had requests.
      this.peers.delete(request.source.peer)
    }
  }

  /** The chunk arrived, verified and stored: returns the other requests for it, which the caller cancels. */
  completed (id: number): PickedRequest[] {
    const request = this.requests.get(id)
    if (request === undefined) return []
    this.release(request)
    if (request.source.kind === 'peer') {
      const state = this.peers.get(request.source.peer)
      if (state !== undefined) state.failures = 0
    }
    this.markHeld(request.index, request.source.kind === 'peer')
    const others = [...(this.byChunk.get(request.index) ?? [])].map(other => this.requests.get(other)!)
    for (const other of others) this.release(other)
    this.originNotBefore.delete(request.index)
    return others
  }

  /**
   * The request ended without the chunk. A peer that fails again and again
   * is rested for a while; one that says it does not hold the chunk loses
   * that bit; a busy one is paused for `retryAfterMs` (or the default pause).
   * For the origin, `retryAfterMs` keeps it from being asked again at once.
   */
  failed (id: number, kind: FailureKind, retryAfterMs = 0): void {
    const request = this.requests.get(id)
    if (request === undefined) return
    this.release(request)
    if (request.source.kind === 'origin') {
      if (retryAfterMs > 0) this.originNotBefore.set(request.index, this.now() + retryAfterMs)
      return
    }
    if (kind === 'cancelled') return
    const state = this.peers.get(request.source.peer)
    if (state === undefined) return
    if (kind === 'busy') {
      state.pausedUntil = Math.max(state.pausedUntil, this.now() + (retryAfterMs > 0 ? retryAfterMs : this.busyPauseMs))
      return
    }
    if (kind === 'not-cached' && hasBit(state.bits, request.index)) {
      clearBit(state.bits, request.index)
      this.availability[request.index]--
    }
    state.failures++
    if (state.failures >= this.failuresBeforeRest) {
      state.restUntil = this.now() + this.restMs
      state.failures = 0
    }
  }

  /** Requests in flight for a chunk (for tests and diagnostics). */
  requestsFor (index: number): PickedRequest[] {
    return [...(this.byChunk.get(index) ?? [])].map(id => this.requests.get(id)!)
  }
}
