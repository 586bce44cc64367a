import type { AbortOptions } from '@libp2p/interface'
import type { Logger } from '../../protocol/logger.js'
import { RefusalLog } from '../refusals.js'
import { ChunkNotCachedError, type ChunkCache } from '../cache.js'
import type { MeshNetwork } from '../p2p/network.js'
import { PieceNotHeldError, type PieceRequest, type PieceSource } from '../protocols/chunk/index.js'
import { bitfieldBytes, type HaveMessage } from '../protocols/have/index.js'
import type { DownloadProgress, FetchPackageOptions } from './downloader.js'
import type { ChunkOrigin } from './origin-source.js'
import { DEFAULT_ORIGIN_FETCHERS, isOriginFetcher } from './election.js'
import { Swarm, type RemoteView, type SwarmInit } from './swarm.js'

/** Packages per peer whose announcements are kept before this agent downloads them. */
export const MAX_REMOTE_PACKAGES_PER_PEER = 16

export interface MeshFetcherInit {
  network: MeshNetwork
  cache: ChunkCache
  origin: ChunkOrigin
  logger: Logger
  /** Where refused chunks and peers are logged. @default a refusal log on `logger` */
  refusals?: RefusalLog
  /** Tuning passed to every download (picker, election, ban threshold). */
  swarm?: Pick<SwarmInit, 'picker' | 'originAttempts' | 'badChunksBeforeBan' | 'now' | 'random'>
  /** Called when a peer is banned or its ban lifts, so the connection gater follows. */
  onBansChanged?: () => void
  /** Site peers this agent knows of, connected or not: with none, nobody is waited for before the origin. */
  knownPeers?: () => number
  /** Their peer ids (the peer book): a large site's origin fetchers are found among them. */
  sitePeers?: () => Iterable<string>
}

/**
 * The mesh side of the agent: it keeps what peers announce, answers their
 * interest from the cache, serves pieces, and runs one swarm per package
 * being downloaded. The task runner reaches it through `fetchPackage`.
 */
export class MeshFetcher {
  private readonly init: MeshFetcherInit
  private readonly network: MeshNetwork
  private readonly cache: ChunkCache
  private readonly refusals: RefusalLog
  /** Peer → package → what it said. */
  private readonly remote = new Map<string, Map<string, RemoteView>>()
  private readonly swarms = new Map<string, { swarm: Swarm, done: Promise<unknown>, bans: Set<string> }>()
  /** Origin fetchers by package at the site size they were worked out for. */
  private readonly fetchers = new Map<string, { size: number, peers: Map<string, boolean>, known?: number }>()
  /** Bumped when a peer connects, leaves or says whether it downloads: the downloader estimates follow. */
  private viewVersion = 0
  private readonly downloaderCounts = new Map<string, { version: number, size: number, count: number }>()
  private readonly onConnected = (peer: string): void => { this.viewVersion++; this.peerConnected(peer) }
  private readonly onDisconnected = (peer: string): void => { this.viewVersion++; this.peerDisconnected(peer) }
  private readonly onMessage = (peer: string, message: HaveMessage): void => { this.message(peer, message) }

  constructor (init: MeshFetcherInit) {
    this.init = init
    this.network = init.network
    this.cache = init.cache
    this.refusals = init.refusals ?? new RefusalLog({ logger: init.logger })
  }

  start (): void {
    this.network.on('connected', this.onConnected)
    this.network.on('disconnected', this.onDisconnected)
    this.network.on('message', this.onMessage)
    for (const peer of this.network.connectedPeers()) this.peerConnected(peer)
  }

  stop (): void {
    this.network.off('connected', this.onConnected)
    this.network.off('disconnected', this.onDisconnected)
    this.network.off('message', this.onMessage)
  }

  /** Serves pieces of the packages the cache knows, from verified chunks only. */
  readonly pieces: PieceSource = {
    readPiece: async (request: PieceRequest, options?: AbortOptions): Promise<Uint8Array> => {
      options?.signal?.throwIfAborted()
      try {
        return await this.cache.readPiece(request.packageId, request.index, request.offsetBytes, request.lengthBytes)
      } catch (error) {
        if (error instanceof ChunkNotCachedError || (error as Error).name === 'ContentNotFoundError' || (error as Error).name === 'HashMismatchError') {
          throw new PieceNotHeldError((error as Error).message)
        }
        throw error
      }
    },
    donePiece: (bytes: Uint8Array): void => { this.cache.returnPiece(bytes) }
  }

  /** Whether a download currently bans the peer (the gater refuses it and nothing is served to it). */
  isBanned (peer: string): boolean {
    for (const { bans } of this.swarms.values()) if (bans.has(peer)) return true
    return false
  }

  bannedPeers (): Set<string> {
    const out = new Set<string>()
    for (const { bans } of this.swarms.values()) for (const peer of bans) out.add(peer)
    return out
  }

  /** Devices in the site as far as this agent knows: itself and the peers it knows of. */
  siteSize (): number {
    return (this.init.knownPeers?.() ?? 0) + 1
  }

  /**
   * Devices of the site that download the package, as far as this agent can
   * tell: the site's size times the share of its connected peers that
   * download it or hold some of it. A task for all of a large site keeps
   * the whole size (every peer takes part); a task for a few of its devices
   * counts few, and those few all fetch from the origin as a small site's
   * devices do, rather than wait for fetchers that are not downloading.
   */
  downloaders (packageId: string): number {
    const size = this.siteSize()
    const cached = this.downloaderCounts.get(packageId)
    if (cached !== undefined && cached.version === this.viewVersion && cached.size === size) return cached.count
    let answered = 0
    let taking = 0
    for (const peer of this.network.connectedPeers()) {
      const view = this.remote.get(peer)?.get(packageId)
      if (view === undefined || (!view.interested && view.bits === undefined)) continue
      answered++
      if (view.interested || (view.bits?.some(byte => byte !== 0) ?? false)) taking++
    }
    const count = answered === 0 ? size : Math.max(1, Math.round(size * taking / answered))
    this.downloaderCounts.set(packageId, { version: this.viewVersion, size, count })
    return count
  }

  private fetchersOf (packageId: string): { size: number, peers: Map<string, boolean>, known?: number } {
    const size = this.downloaders(packageId)
    let entry = this.fetchers.get(packageId)
    if (entry?.size !== size) {
      entry = { size, peers: new Map() }
      this.fetchers.set(packageId, entry)
    }
    return entry
  }

  private isFetcher (packageId: string, peer: string): boolean {
    const entry = this.fetchersOf(packageId)
    let fetcher = entry.peers.get(peer)
    if (fetcher === undefined) {
      fetcher = isOriginFetcher(packageId, peer, this.originFetchers, entry.size)
      entry.peers.set(peer, fetcher)
    }
    return fetcher
  }

  private get originFetchers (): number {
    return this.init.swarm?.picker?.originFetchers ?? DEFAULT_ORIGIN_FETCHERS
  }

  /** Origin fetchers of the package among the site peers this agent knows. */
  private knownFetchers (packageId: string): number {
    const entry = this.fetchersOf(packageId)
    if (entry.known === undefined) {
      let count = 0
      for (const peer of this.init.sitePeers?.() ?? []) if (this.isFetcher(packageId, peer)) count++
      entry.known = count
    }
    return entry.known
  }

  /**
   * Whether this agent and the peer are both origin fetchers of a package
   * this agent downloads: the peer set keeps such peers connected, so that
   * the fetchers of a large site elect alike.
   */
  isFellowFetcher (peer: string): boolean {
    for (const packageId of this.swarms.keys()) {
      if (this.fetchersOf(packageId).size <= this.originFetchers) continue
      if (this.isFetcher(packageId, this.network.selfId) && this.isFetcher(packageId, peer)) return true
    }
    return false
  }

  /** Chunks the peer said it holds that this agent's running downloads lack (the peer set keeps the most useful peers). */
  usefulChunks (peer: string): number {
    const packages = this.remote.get(peer)
    if (packages === undefined) return 0
    let count = 0
    for (const [packageId, { swarm }] of this.swarms) {
      const theirs = packages.get(packageId)?.bits
      if (theirs === undefined) continue
      const ours = swarm.bitfield
      for (let byte = 0; byte < Math.min(ours.byteLength, theirs.byteLength); byte++) {
        let lacking = theirs[byte] & ~ours[byte] & 0xff
        while (lacking !== 0) {
          count += lacking & 1
          lacking >>= 1
        }
      }
    }
    return count
  }

  private view (peer: string, packageId: string): RemoteView {
    let packages = this.remote.get(peer)
    if (packages === undefined) {
      packages = new Map()
      this.remote.set(peer, packages)
    }
    let view = packages.get(packageId)
    if (view === undefined) {
      view = { interested: false, fetching: new Map() }
      packages.set(packageId, view)
      if (packages.size > MAX_REMOTE_PACKAGES_PER_PEER) packages.delete(packages.keys().next().value!)
    }
    return view
  }

  private peerConnected (peer: string): void {
    for (const { swarm } of this.swarms.values()) swarm.tellState(peer, 'interested')
    // Interest that arrived before the channel opened is answered now.
    for (const [packageId, view] of this.remote.get(peer) ?? []) {
      if (view.interested && !this.swarms.has(packageId)) this.answerInterest(peer, packageId, view.chunkCount ?? -1)
    }
  }

  /**
   * A peer that is not downloading tells a downloader what it holds, from
   * the cache: nothing at all is an answer too (an empty bitfield), so the
   * downloader knows it need not wait for this peer before its origin
   * election.
   */
  private answerInterest (peer: string, packageId: string, chunkCount: number): void {
    if (chunkCount < 0) return
    const held = this.cache.bitfield(packageId)
    const bits = held !== undefined && held.chunkCount === chunkCount ? held.bits : new Uint8Array(bitfieldBytes(chunkCount))
    this.network.send(peer, { type: 'bitfield', packageId, chunkCount, bits })
  }

  private peerDisconnected (peer: string): void {
    this.remote.delete(peer)
    for (const { swarm } of this.swarms.values()) swarm.onPeerLeft(peer)
  }

  private message (peer: string, message: HaveMessage): void {
    if (message.type !== 'have' && message.type !== 'fetching') this.viewVersion++
    const view = this.view(peer, message.packageId)
    switch (message.type) {
      case 'interested':
      case 'bitfield':
        view.bits = message.bits
        view.chunkCount = message.chunkCount
        if (message.type === 'interested') view.interested = true
        break
      case 'have':
        if (view.bits !== undefined && message.index < (view.chunkCount ?? 0)) view.bits[message.index >> 3] |= 0x80 >> (message.index & 7)
        view.fetching.delete(message.index)
        break
      case 'fetching':
        view.fetching.set(message.index, Date.now())
        break
      case 'not-interested':
        view.interested = false
        view.fetching.clear()
        break
    }
    const active = this.swarms.get(message.packageId)
    if (active !== undefined) {
      if (active.bans.has(peer)) return
      active.swarm.onMessage(peer, message)
      // A downloader that joins later has missed the `have`s and `fetching`s sent so far.
      if (message.type === 'interested') active.swarm.tellState(peer, 'bitfield')
      return
    }
    // A downloader asks what we hold: a seeder answers from the cache.
    if (message.type === 'interested') this.answerInterest(peer, message.packageId, message.chunkCount)
  }

  private interestedPeers (packageId: string): string[] {
    const out: string[] = []
    for (const [peer, packages] of this.remote) if (packages.get(packageId)?.interested === true) out.push(peer)
    return out
  }

  /** Brings a package's chunks into the cache from peers first, from the origin as the election says. */
  readonly fetchPackage = async (options: FetchPackageOptions): Promise<DownloadProgress> => {
    this.cache.register(options.pkg)
    // Two tasks with one package: the second waits for the first and then finds the chunks here.
    for (let existing = this.swarms.get(options.pkg.id); existing !== undefined; existing = this.swarms.get(options.pkg.id)) {
      await existing.done.catch(() => {})
      options.signal.throwIfAborted()
    }
    const bans = new Set<string>()
    // Alone in its site, a device has nobody to agree with: no gathering before it asks the origin.
    const alone = this.network.connectedPeers().length === 0 && (this.init.knownPeers?.() ?? 0) === 0
    const packageId = options.pkg.id
    const swarm = new Swarm({
      ...this.init.swarm,
      picker: {
        ...this.init.swarm?.picker,
        ...(alone ? { gatherMs: 0 } : {}),
        siteSize: () => this.downloaders(packageId),
        siteFetchers: () => this.knownFetchers(packageId),
        peersInSight: () => this.network.connectedPeers().filter(peer => !bans.has(peer)).length
      },
      pkg: options.pkg,
      network: this.network,
      cache: this.cache,
      origin: this.init.origin,
      logger: this.init.logger.child({ taskId: options.taskId, packageId: options.pkg.id }),
      refusals: this.refusals,
      ...(options.bucket !== undefined ? { bucket: options.bucket } : {}),
      ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
      interestedPeers: () => this.interestedPeers(options.pkg.id),
      ban: peer => {
        bans.add(peer)
        this.init.onBansChanged?.()
      },
      signal: options.signal
    })
    if (swarm.complete) {
      const progress = await swarm.run()
      return progress
    }
    const entry = { swarm, done: Promise.resolve() as Promise<unknown>, bans }
    this.swarms.set(options.pkg.id, entry)
    for (const [peer, packages] of this.remote) {
      const view = packages.get(options.pkg.id)
      if (view !== undefined) swarm.seed(peer, view)
    }
    const bits = swarm.bitfield
    for (const peer of this.network.connectedPeers()) {
      this.network.send(peer, { type: 'interested', packageId: options.pkg.id, chunkCount: options.pkg.chunks.length, bits })
    }
    const running = swarm.run()
    entry.done = running
    try {
      return await running
    } finally {
      this.swarms.delete(options.pkg.id)
      this.fetchers.delete(options.pkg.id)
      this.downloaderCounts.delete(options.pkg.id)
      for (const peer of this.network.connectedPeers()) this.network.send(peer, { type: 'not-interested', packageId: options.pkg.id })
      if (bans.size > 0) this.init.onBansChanged?.()
    }
  }
}
