import { createHash } from 'node:crypto'
import { DEFAULT_ORIGIN_FETCHERS, isOriginFetcher } from '../../agent/download/election.js'
import { DEFAULT_ORIGIN_STREAMS } from '../../agent/download/origin-lanes.js'
import { PiecePicker, type PickedRequest } from '../../agent/download/picker.js'
import { TokenBucket } from '../../agent/download/token-bucket.js'
import { PeerSetPolicy } from '../../agent/p2p/peer-set.js'
import { EventQueue } from './events.js'

/** A site's links and its agents' settings, as the simulation models them. */
export interface SiteModel {
  devices: number
  packageBytes: number
  /** @default 1 MiB */
  chunkBytes?: number
  /** The site's WAN link to the origin, shared by every origin fetch (processor sharing). */
  wanBytesPerSecond: number
  /** One-way delay of the WAN. @default 10 */
  wanDelayMs?: number
  /** Each device's LAN interface, each way. */
  lanBytesPerSecond: number
  /** One-way delay on the LAN. @default 0.25 */
  lanDelayMs?: number
  /** The task's per-device download cap (the real token bucket paces every source). Absent: none. */
  capBytesPerSecond?: number
  /** The peer set's bound. @default the agent's (16) */
  maxPeers?: number
  /** @default the agent's */
  rotationIntervalMs?: number
  /** Devices learn of every other (mDNS on one LAN); false: each knows a random sample of this size. */
  sampleSize?: number
  /** Devices start within this spread (assignments do not reach every device at once). @default 500 */
  startSpreadMs?: number
  /** How long `have`s are batched. @default 150 (the agent's) */
  haveBatchMs?: number
  /** Picker and election settings as the agent's (gather, election timeout…), overridable. */
  picker?: { gatherMs?: number, electionTimeoutMs?: number, maxOriginRequests?: number, maxRequests?: number, maxRequestsPerPeer?: number, originFetchers?: number }
  /**
   * Chunks of one device that stream from the origin at once (the agent's
   * OriginLanes): later ones wait their turn with their request already sent.
   * @default 1 (the agent's); 0: every origin fetch streams at once
   */
  originStreams?: number
  /** Churn: devices killed (origin fetchers first; their connections close at once) and restarted with what they had stored, and devices that join late. */
  churn?: { killed: number, killAtMs: number, restartAfterMs: number, late: number, lateAtMs: number }
  /** Deterministic runs. @default 1 */
  seed?: number
  /** Virtual time after which the run stops as failed. @default 30 min */
  limitMs?: number
}

export interface SiteOutcome {
  devices: number
  succeeded: number
  /** Bytes that crossed the WAN (whole chunks and the parts of chunks cut off by churn) ÷ package size. */
  wanCopies: number
  /** Bytes of origin fetches cut off by a kill. */
  wanBytesLost: number
  lastDoneMs: number
  medianDoneMs: number
  /** max(S/W, S/C): the physical bound on the last device. */
  boundMs: number
  /** Have/interest/fetching messages and piece request framing received per device, bytes. */
  controlBytesPerDevice: number
  /** Package bytes each device received from peers or the origin, on average. */
  dataBytesPerDevice: number
  /** Largest number of connections any device held. */
  maxConnections: number
  /** Origin fetches started, by the picker's reason. */
  originFetches: { elected: number, fallback: number, spare: number }
  events: number
}

/** Framing of a length-prefixed message (a varint of up to 3 bytes for these sizes). */
const FRAME_BYTES = 2
const HEADER_BYTES = 1 + 32
/** A piece request and the answer's header, each framed. */
const PIECE_EXCHANGE_BYTES = FRAME_BYTES + 1 + 32 + 12 + FRAME_BYTES + 8

interface Running {
  request: PickedRequest
  /** Cancels the transfer; returns WAN bytes moved so far for an origin fetch. */
  cancel: () => void
}

interface Device {
  id: string
  index: number
  alive: boolean
  startedAt: number
  doneAt?: number
  picker?: PiecePicker
  bucket?: TokenBucket
  policy: PeerSetPolicy
  /** Connected peers → when the connection opened. */
  links: Map<string, number>
  /** Peers that said they download the package. */
  interested: Set<string>
  /** Connected peers that answered this device's interest. */
  answered: Set<string>
  /** What each connected peer holds, as far as this device heard. */
  remoteBits: Map<string, Uint8Array>
  held: Uint8Array
  heldCount: number
  haveBatch: number[]
  haveFlushAt?: number
  running: Map<number, Running>
  pumpAt?: number
  uploadFreeAt: number
  downloadFreeAt: number
  controlBytesIn: number
  dataBytesIn: number
  /** Peers known (a sample or the whole site). */
  known: string[]
  dialing: number
  /** Generation: a restarted device ignores the events of its former life. */
  life: number
}

interface WanFlow {
  device: Device
  life: number
  requestId: number
  remaining: number
  moved: number
  capShare: number
  onDone: () => void
}

const hasBit = (bits: Uint8Array, index: number): boolean => (bits[index >> 3] & (0x80 >> (index & 7))) !== 0
const setBit = (bits: Uint8Array, index: number): void => { bits[index >> 3] |= 0x80 >> (index & 7) }

/** A site of devices running the agent's pure modules (picker, election, token bucket, peer set) over modelled links. */
export class SiteSimulation {
  readonly model: Required<Omit<SiteModel, 'capBytesPerSecond' | 'maxPeers' | 'rotationIntervalMs' | 'sampleSize' | 'churn' | 'picker' | 'originStreams'>> & SiteModel
  private readonly queue = new EventQueue()
  private readonly devices = new Map<string, Device>()
  private readonly chunkCount: number
  private readonly random: () => number
  private readonly flows = new Set<WanFlow>()
  private flowsUpdatedAt = 0
  private flowsVersion = 0
  private wanBytes = 0
  private wanBytesLost = 0
  private maxConnections = 0
  private readonly originFetches = { elected: 0, fallback: 0, spare: 0 }
  private readonly packageId: string

  constructor (model: SiteModel) {
    this.model = { chunkBytes: 1024 * 1024, wanDelayMs: 10, lanDelayMs: 0.25, startSpreadMs: 500, haveBatchMs: 150, seed: 1, limitMs: 30 * 60_000, ...model }
    this.chunkCount = Math.ceil(model.packageBytes / this.model.chunkBytes)
    let state = this.model.seed * 7919 + 17
    this.random = () => { state = (state * 16807) % 2147483647; return (state - 1) / 2147483646 }
    this.packageId = createHash('sha256').update(`sim-${this.model.seed}`).digest('hex')
  }

  private chunkLength (index: number): number {
    return Math.min(this.model.chunkBytes, this.model.packageBytes - index * this.model.chunkBytes)
  }

  run (): SiteOutcome {
    const ids = Array.from({ length: this.model.devices }, (_, i) => `device-${String(i).padStart(5, '0')}`)
    const late = new Set(ids.slice(ids.length - (this.model.churn?.late ?? 0)))
    for (const [index, id] of ids.entries()) {
      const device = this.newDevice(id, index, ids)
      this.devices.set(id, device)
      const at = late.has(id) ? this.model.churn!.lateAtMs : this.random() * this.model.startSpreadMs
      device.alive = false
      this.queue.at(at, () => { this.start(device) })
    }
    const churn = this.model.churn
    if (churn !== undefined && churn.killed > 0) {
      // The worst case: origin fetchers are killed first, mid-fetch.
      const fetchers = this.model.picker?.originFetchers ?? DEFAULT_ORIGIN_FETCHERS
      const candidates = ids.filter(id => !late.has(id))
      const victims = [...candidates.filter(id => isOriginFetcher(this.packageId, id, fetchers, ids.length)), ...candidates].filter((id, index, all) => all.indexOf(id) === index).slice(0, churn.killed)
      this.queue.at(churn.killAtMs, () => {
        for (const id of victims) this.kill(this.devices.get(id)!)
        this.queue.after(churn.restartAfterMs, () => { for (const id of victims) this.start(this.devices.get(id)!) })
      })
    }
    const all = [...this.devices.values()]
    this.queue.run(this.model.limitMs, () => all.every(device => device.doneAt !== undefined))
    const done = all.filter(device => device.doneAt !== undefined).map(device => device.doneAt!).sort((a, b) => a - b)
    const bounds = [this.model.packageBytes / this.model.wanBytesPerSecond * 1000]
    if (this.model.capBytesPerSecond !== undefined) bounds.push(this.model.packageBytes / this.model.capBytesPerSecond * 1000)
    return {
      devices: all.length,
      succeeded: done.length,
      wanCopies: (this.wanBytes + this.wanBytesLost) / this.model.packageBytes,
      wanBytesLost: this.wanBytesLost,
      lastDoneMs: done.length === all.length ? done[done.length - 1] : Number.POSITIVE_INFINITY,
      medianDoneMs: done[Math.floor(done.length / 2)] ?? Number.POSITIVE_INFINITY,
      boundMs: Math.max(...bounds),
      controlBytesPerDevice: all.reduce((sum, device) => sum + device.controlBytesIn, 0) / all.length,
      dataBytesPerDevice: all.reduce((sum, device) => sum + device.dataBytesIn, 0) / all.length,
      maxConnections: this.maxConnections,
      originFetches: { ...this.originFetches },
      events: this.queue.processed
    }
  }

  private newDevice (id: string, index: number, ids: string[]): Device {
    let known = ids.filter(other => other !== id)
    if (this.model.sampleSize !== undefined && this.model.sampleSize < known.length) {
      const sample = new Set<string>()
      while (sample.size < this.model.sampleSize) sample.add(known[Math.floor(this.random() * known.length)])
      known = [...sample]
    }
    return {
      id,
      index,
      alive: false,
      startedAt: 0,
      policy: new PeerSetPolicy({
        now: () => this.queue.now,
        random: this.random,
        ...(this.model.maxPeers !== undefined ? { maxPeers: this.model.maxPeers } : {}),
        ...(this.model.rotationIntervalMs !== undefined ? { rotationIntervalMs: this.model.rotationIntervalMs } : {})
      }),
      links: new Map(),
      interested: new Set(),
      answered: new Set(),
      remoteBits: new Map(),
      held: new Uint8Array(Math.ceil(this.chunkCount / 8)),
      heldCount: 0,
      haveBatch: [],
      running: new Map(),
      uploadFreeAt: 0,
      downloadFreeAt: 0,
      controlBytesIn: 0,
      dataBytesIn: 0,
      known,
      dialing: 0,
      life: 0
    }
  }

  private complete (device: Device): boolean {
    return device.heldCount === this.chunkCount
  }

  /** The device starts (or restarts with what it had stored): a new picker, connections, interest. */
  private start (device: Device): void {
    device.alive = true
    device.life++
    device.startedAt = this.queue.now
    const held: number[] = []
    for (let index = 0; index < this.chunkCount; index++) if (hasBit(device.held, index)) held.push(index)
    device.picker = new PiecePicker({
      ...this.model.picker,
      chunkCount: this.chunkCount,
      packageId: this.packageId,
      self: device.id,
      held,
      now: () => this.queue.now,
      random: this.random,
      siteSize: () => this.siteSizeOf(device),
      siteFetchers: () => this.knownFetchers(device)
    })
    if (this.model.capBytesPerSecond !== undefined) device.bucket = new TokenBucket({ bytesPerSecond: this.model.capBytesPerSecond, now: () => this.queue.now })
    this.replan(device)
  }

  /** The device dies: its connections close at once (peers hand its elections back), its transfers stop. */
  private kill (device: Device): void {
    device.alive = false
    for (const running of [...device.running.values()]) running.cancel()
    device.running.clear()
    device.haveBatch = []
    for (const peer of [...device.links.keys()]) this.disconnect(device, this.devices.get(peer)!)
    device.interested.clear()
    device.answered.clear()
    device.remoteBits.clear()
    device.uploadFreeAt = this.queue.now
    device.downloadFreeAt = this.queue.now
  }

  // ---- connections (the peer-set policy) -------------------------------------------------

  /** What a device knows of its site's size: every device on one LAN (mDNS), or its sample. */
  private siteSizeOf (device: Device): number {
    return device.known.length + 1
  }

  private readonly fetcherCounts = new Map<Device, number>()

  /** Origin fetchers among the peers a device knows (what the agent counts in its peer book). */
  private knownFetchers (device: Device): number {
    let count = this.fetcherCounts.get(device)
    if (count === undefined) {
      const fetchers = this.model.picker?.originFetchers ?? DEFAULT_ORIGIN_FETCHERS
      count = device.known.filter(peer => isOriginFetcher(this.packageId, peer, fetchers, this.siteSizeOf(device))).length
      this.fetcherCounts.set(device, count)
    }
    return count
  }

  /** Whether both are origin fetchers of the package while the device downloads it: they keep connections to each other. */
  private fellowFetchers (device: Device, peer: string): boolean {
    if (this.complete(device)) return false
    const fetchers = this.model.picker?.originFetchers ?? DEFAULT_ORIGIN_FETCHERS
    const size = this.siteSizeOf(device)
    return isOriginFetcher(this.packageId, device.id, fetchers, size) && isOriginFetcher(this.packageId, peer, fetchers, size)
  }

  private replan (device: Device): void {
    if (!device.alive) return
    const connected = [...device.links].map(([peer, since]) => ({ peer, since, siteCache: false, originFetcher: this.fellowFetchers(device, peer), usefulChunks: this.useful(device, peer) }))
    const candidates = device.known.filter(peer => !device.links.has(peer) && this.devices.get(peer)!.alive).map(peer => ({ peer, siteCache: false, originFetcher: this.fellowFetchers(device, peer) }))
    const plan = device.policy.plan(connected, candidates, device.dialing)
    for (const peer of plan.drop) this.disconnect(device, this.devices.get(peer)!)
    for (const peer of plan.dial) this.dial(device, this.devices.get(peer)!)
    const next = device.policy.nextRotationAt
    if (Number.isFinite(next) && !this.complete(device)) {
      const life = device.life
      this.queue.at(next, () => { if (device.life === life) this.replan(device) })
    }
  }

  private useful (device: Device, peer: string): number {
    const bits = device.remoteBits.get(peer)
    if (bits === undefined) return 0
    let count = 0
    for (let index = 0; index < this.chunkCount; index++) if (hasBit(bits, index) && !hasBit(device.held, index)) count++
    return count
  }

  private dial (from: Device, to: Device): void {
    from.dialing++
    const life = from.life
    // Connection set-up: TCP, noise and yamux, about three round trips.
    this.queue.after(6 * this.model.lanDelayMs, () => {
      from.dialing--
      if (from.life !== life || !from.alive) return
      if (!to.alive || to.links.size >= to.policy.maxPeers || from.links.has(to.id)) {
        this.replanSoon(from)
        // A refused fellow fetcher: the full side makes room and dials it (as the agent's discovery does on a refusal).
        if (to.alive && this.fellowFetchers(to, from.id)) this.replan(to)
        return
      }
      this.connect(from, to)
    })
  }

  private replanSoon (device: Device): void {
    const life = device.life
    this.queue.after(1000, () => { if (device.life === life) this.replan(device) })
  }

  private connect (a: Device, b: Device): void {
    const now = this.queue.now
    a.links.set(b.id, now)
    b.links.set(a.id, now)
    this.maxConnections = Math.max(this.maxConnections, a.links.size, b.links.size)
    this.introduce(a, b)
    this.introduce(b, a)
  }

  /** On connect: a downloader says `interested` with its bitfield, a device that is done answers with its bitfield. */
  private introduce (from: Device, to: Device): void {
    const downloading = !this.complete(from)
    const bits = from.held.slice()
    const life = to.life
    const fromLife = from.life
    this.deliver(to, HEADER_BYTES + 4 + bits.byteLength, () => {
      if (to.life !== life || !to.links.has(from.id) || from.life !== fromLife) return
      to.remoteBits.set(from.id, bits)
      if (downloading) to.interested.add(from.id)
      to.answered.add(from.id)
      to.picker?.peerBitfield(from.id, bits, downloading)
      // Fetches under way are told too, so that the newcomer does not start them again.
      for (const running of from.running.values()) {
        if (running.request.source.kind === 'origin') to.picker?.peerFetching(from.id, running.request.index)
      }
      this.checkGather(to)
      this.pump(to)
    })
  }

  private disconnect (a: Device, b: Device): void {
    if (!a.links.delete(b.id)) return
    b.links.delete(a.id)
    for (const [self, other] of [[a, b], [b, a]] as const) {
      self.interested.delete(other.id)
      self.answered.delete(other.id)
      self.remoteBits.delete(other.id)
      // Connection close: its elections come back at once.
      self.picker?.peerLeft(other.id)
      for (const running of [...self.running.values()]) {
        if (running.request.source.kind === 'peer' && running.request.source.peer === other.id) {
          running.cancel()
          self.running.delete(running.request.id)
          self.picker?.failed(running.request.id, 'error')
        }
      }
      if (self.alive) {
        this.pump(self)
        this.replan(self)
      }
    }
  }

  private checkGather (device: Device): void {
    if (device.picker === undefined || !device.picker.gathering || device.links.size === 0) return
    if ([...device.links.keys()].every(peer => device.answered.has(peer))) device.picker.endGather()
  }

  /** A control message to a device after the LAN delay; its bytes count to the receiver. */
  private deliver (to: Device, bytes: number, run: () => void): void {
    to.controlBytesIn += bytes + FRAME_BYTES
    this.queue.after(this.model.lanDelayMs, run)
  }

  // ---- the download ------------------------------------------------------------------------

  /** Runs the picker once at the current time (coalesced), and again when it asks to be woken. */
  private pump (device: Device): void {
    if (!device.alive || device.picker === undefined || device.pumpAt === this.queue.now) return
    device.pumpAt = this.queue.now
    const life = device.life
    this.queue.after(0, () => {
      if (device.life !== life || !device.alive) return
      device.pumpAt = undefined
      this.step(device)
    })
  }

  private step (device: Device): void {
    const picker = device.picker!
    if (picker.complete) return
    for (const request of picker.next()) this.startRequest(device, request)
    const wake = picker.wakeAt()
    if (wake !== undefined) {
      const life = device.life
      this.queue.at(wake, () => { if (device.life === life) this.pump(device) })
    }
  }

  private startRequest (device: Device, request: PickedRequest): void {
    if (request.source.kind === 'origin') {
      this.originFetches[request.source.reason]++
      // Others wait for this chunk rather than fetch it too.
      for (const peer of device.links.keys()) {
        const other = this.devices.get(peer)!
        const life = other.life
        this.deliver(other, HEADER_BYTES + 4, () => { if (other.life === life && other.links.has(device.id)) { other.picker?.peerFetching(device.id, request.index); this.pump(other) } })
      }
      this.startOrigin(device, request)
    } else {
      this.startPeer(device, request, this.devices.get(request.source.peer)!)
    }
  }

  private startOrigin (device: Device, request: PickedRequest): void {
    const bytes = this.chunkLength(request.index)
    const life = device.life
    let flow: WanFlow | undefined
    let cancelled = false
    const running: Running = {
      request,
      cancel: () => {
        cancelled = true
        if (flow !== undefined && this.flows.has(flow)) {
          this.advanceFlows()
          this.flows.delete(flow)
          this.wanBytesLost += flow.moved
          this.rescheduleFlows()
        }
      }
    }
    device.running.set(request.id, running)
    // The request crosses the WAN before bytes flow back.
    this.queue.after(2 * this.model.wanDelayMs, () => {
      if (cancelled || device.life !== life) return
      this.advanceFlows()
      flow = {
        device,
        life,
        requestId: request.id,
        remaining: bytes,
        moved: 0,
        capShare: Number.POSITIVE_INFINITY,
        onDone: () => {
          this.wanBytes += bytes
          device.running.delete(request.id)
          this.stored(device, request, bytes)
        }
      }
      this.flows.add(flow)
      this.rescheduleFlows()
    })
  }

  /** Moves every WAN flow's bytes up to now at its current rate. */
  private advanceFlows (): void {
    const elapsed = (this.queue.now - this.flowsUpdatedAt) / 1000
    this.flowsUpdatedAt = this.queue.now
    if (elapsed <= 0) return
    for (const flow of this.flows) {
      const moved = Math.min(flow.remaining, this.rateOf(flow) * elapsed)
      flow.remaining -= moved
      flow.moved += moved
    }
  }

  private rates = new Map<WanFlow, number>()

  private rateOf (flow: WanFlow): number {
    return this.rates.get(flow) ?? 0
  }

  /**
   * Max-min fair shares of the WAN, each flow also held to its device's cap
   * (shared by that device's origin fetches), and the next completion.
   */
  private rescheduleFlows (): void {
    this.rates.clear()
    const perDevice = new Map<Device, number>()
    // A device's flows stream in the order they started, `originStreams` at a time; the rest wait at rate 0.
    const streams = this.model.originStreams ?? DEFAULT_ORIGIN_STREAMS
    const streaming: WanFlow[] = []
    for (const flow of this.flows) {
      const count = perDevice.get(flow.device) ?? 0
      if (streams > 0 && count >= streams) continue
      perDevice.set(flow.device, count + 1)
      streaming.push(flow)
    }
    const capOf = (flow: WanFlow): number => this.model.capBytesPerSecond !== undefined ? this.model.capBytesPerSecond / perDevice.get(flow.device)! : Number.POSITIVE_INFINITY
    const pending = streaming.sort((a, b) => capOf(a) - capOf(b))
    let capacity = this.model.wanBytesPerSecond
    for (let i = 0; i < pending.length; i++) {
      const share = capacity / (pending.length - i)
      const rate = Math.min(share, capOf(pending[i]))
      this.rates.set(pending[i], rate)
      capacity -= rate
    }
    const version = ++this.flowsVersion
    let first: WanFlow | undefined
    let firstAt = Number.POSITIVE_INFINITY
    for (const flow of streaming) {
      const at = this.queue.now + flow.remaining / Math.max(1e-9, this.rateOf(flow)) * 1000
      if (at < firstAt) { firstAt = at; first = flow }
    }
    if (first === undefined) return
    this.queue.at(firstAt, () => {
      if (version !== this.flowsVersion) return
      this.advanceFlows()
      const finished = [...this.flows].filter(flow => flow.remaining <= 1e-6)
      for (const flow of finished) this.flows.delete(flow)
      this.rescheduleFlows()
      for (const flow of finished) {
        // The bytes still arrive one WAN delay later.
        this.queue.after(this.model.wanDelayMs, () => { if (flow.device.life === flow.life && flow.device.alive) flow.onDone() })
      }
    })
  }

  private startPeer (device: Device, request: PickedRequest, peer: Device): void {
    const bytes = this.chunkLength(request.index)
    const now = this.queue.now
    const transfer = bytes / this.model.lanBytesPerSecond * 1000
    // The uploader serves one piece after another at its LAN rate; the receiver's interface and its cap pace the rest.
    const start = Math.max(now + this.model.lanDelayMs, peer.uploadFreeAt)
    let finish = start + transfer
    peer.uploadFreeAt = finish
    finish = Math.max(finish, device.downloadFreeAt + transfer)
    if (device.bucket !== undefined) finish = Math.max(finish, now + device.bucket.reserve(bytes))
    device.downloadFreeAt = finish
    finish += this.model.lanDelayMs
    const pieces = device.bucket !== undefined ? Math.ceil(bytes / device.bucket.pieceBytes) : 1
    let cancelled = false
    device.running.set(request.id, { request, cancel: () => { cancelled = true } })
    const life = device.life
    const peerLife = peer.life
    this.queue.at(finish, () => {
      if (cancelled || device.life !== life || !device.alive) return
      device.running.delete(request.id)
      device.controlBytesIn += pieces * PIECE_EXCHANGE_BYTES
      if (peer.life !== peerLife || !peer.alive || !hasBit(peer.held, request.index)) {
        device.picker!.failed(request.id, peer.alive ? 'not-cached' : 'error')
        this.pump(device)
        return
      }
      this.stored(device, request, bytes)
    })
  }

  /** A chunk arrived, verified: the picker settles, duplicates are cancelled, peers hear of it in the next batch. */
  private stored (device: Device, request: PickedRequest, bytes: number): void {
    const picker = device.picker!
    device.dataBytesIn += bytes
    if (hasBit(device.held, request.index)) {
      picker.failed(request.id, 'cancelled')
      this.pump(device)
      return
    }
    setBit(device.held, request.index)
    device.heldCount++
    for (const other of picker.completed(request.id)) {
      device.running.get(other.id)?.cancel()
      device.running.delete(other.id)
    }
    device.haveBatch.push(request.index)
    if (device.haveFlushAt === undefined) {
      device.haveFlushAt = this.queue.now + this.model.haveBatchMs
      const life = device.life
      this.queue.at(device.haveFlushAt, () => { if (device.life === life) this.flushHaves(device) })
    }
    if (this.complete(device)) {
      device.doneAt = this.queue.now
      this.flushHaves(device)
      // Done: not interested any more (it still serves what it holds).
      for (const peer of device.links.keys()) {
        const other = this.devices.get(peer)!
        const life = other.life
        this.deliver(other, HEADER_BYTES, () => {
          if (other.life !== life || !other.links.has(device.id)) return
          other.interested.delete(device.id)
          other.picker?.peerInterested(device.id, false)
          this.pump(other)
        })
      }
      return
    }
    this.pump(device)
  }

  private flushHaves (device: Device): void {
    device.haveFlushAt = undefined
    if (device.haveBatch.length === 0 || !device.alive) return
    const indices = device.haveBatch
    device.haveBatch = []
    const bytes = HEADER_BYTES + 4 * indices.length
    for (const peer of device.interested) {
      const other = this.devices.get(peer)!
      const life = other.life
      this.deliver(other, bytes, () => {
        if (other.life !== life || !other.links.has(device.id)) return
        const bits = other.remoteBits.get(device.id)
        for (const index of indices) {
          if (bits !== undefined) setBit(bits, index)
          other.picker?.peerHave(device.id, index)
        }
        this.pump(other)
      })
    }
  }
}
