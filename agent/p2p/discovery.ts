import type { Libp2p, PeerId, PeerInfo } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { describeError } from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import type { PeerGate } from './gater.js'
import { PeerBook } from './peer-book.js'
import { PeerSetPolicy, type PeerSetPolicyInit } from './peer-set.js'

export const DEFAULT_DIAL_TIMEOUT_MS = 10_000
export const DEFAULT_PARALLEL_DIALS = 8

export interface DiscoveryInit {
  node: Libp2p
  gate: PeerGate
  logger: Logger
  /** Dial the site peers the coordinator lists (off: mDNS alone). @default true */
  usePeerList?: boolean
  /** @default 10000 */
  dialTimeoutMs?: number
  /** @default 8 */
  parallelDials?: number
  /** The bounded, rotating peer set. @default PeerSetPolicy's defaults (16 connections) */
  peerSet?: Omit<PeerSetPolicyInit, 'now' | 'random'>
  /** Chunks a connected peer holds that this agent's downloads lack: the most useful peers are kept. */
  usefulChunks?: (peer: string) => number
  /** Whether the peer is a fellow origin fetcher of a package this agent downloads: fetchers keep connections to each other. */
  isFellowFetcher?: (peer: string) => boolean
  /**
   * Dial nobody until `releaseDials()`: a device without its certificate yet
   * would only be refused by the peers it dials. @default false
   */
  holdDials?: boolean
  now?: () => number
  random?: () => number
}

/**
 * Keeps this agent connected to a bounded, rotating set of its site peers,
 * chosen among those the coordinator lists and those mDNS finds on the LAN
 * (as long as the gate admits them). Lost connections are replaced; a peer
 * dialed again waits a growing, jittered delay.
 */
export class Discovery {
  readonly book: PeerBook
  readonly policy: PeerSetPolicy
  private readonly init: DiscoveryInit
  private readonly node: Libp2p
  private readonly now: () => number
  private timer?: NodeJS.Timeout
  private dials = 0
  private stopped = false
  private held: boolean
  private readonly onDiscovery = (event: CustomEvent<PeerInfo>): void => {
    const peer = event.detail.id.toString()
    if (peer === this.node.peerId.toString()) return
    this.book.discovered(peer, event.detail.multiaddrs.map(address => address.toString()))
    this.init.logger.debug({ peer, addresses: event.detail.multiaddrs.map(String) }, 'peer seen on the LAN')
    this.schedule()
  }

  private readonly onConnect = (event: CustomEvent<PeerId>): void => {
    this.book.connected(event.detail.toString())
  }

  private readonly onDisconnect = (event: CustomEvent<PeerId>): void => {
    this.book.disconnected(event.detail.toString())
    this.schedule()
  }

  constructor (init: DiscoveryInit) {
    this.init = init
    this.node = init.node
    this.now = init.now ?? Date.now
    this.book = new PeerBook({ now: this.now, random: init.random ?? Math.random })
    this.policy = new PeerSetPolicy({ ...init.peerSet, now: this.now, random: init.random ?? Math.random })
    this.held = init.holdDials ?? false
  }

  /** Whether dialing waits (for this device's first certificate): peers seen meanwhile are only remembered. */
  get dialsHeld (): boolean {
    return this.held
  }

  /** Ends the hold: the peers seen or listed meanwhile are dialed. */
  releaseDials (): void {
    if (!this.held) return
    this.held = false
    this.schedule()
  }

  start (): void {
    this.node.addEventListener('peer:discovery', this.onDiscovery)
    this.node.addEventListener('peer:connect', this.onConnect)
    this.node.addEventListener('peer:disconnect', this.onDisconnect)
    for (const peer of this.node.getPeers()) this.book.connected(peer.toString())
  }

  stop (): void {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.node.removeEventListener('peer:discovery', this.onDiscovery)
    this.node.removeEventListener('peer:connect', this.onConnect)
    this.node.removeEventListener('peer:disconnect', this.onDisconnect)
  }

  /** This agent hung up on the peer for what it did: it is not dialed again before the hold ends. */
  hungUp (peer: string): void {
    this.book.hungUp(peer)
    this.schedule()
  }

  /** The site peers of the latest assignments answer. */
  setPeerList (peers: Array<{ peerId: string, addresses: string[], siteCache?: boolean }>): void {
    if (this.init.usePeerList === false) return
    const self = this.node.peerId.toString()
    this.book.setListed(peers.filter(peer => peer.peerId !== self))
    this.schedule()
  }

  /** Peers were revoked (or left the allow-list): hang up on them, dial those now admitted. */
  async allowListChanged (removed: string[]): Promise<void> {
    for (const peer of removed) {
      this.init.logger.info({ peer }, 'peer no longer an enrolled, active device; disconnecting')
      await this.node.hangUp(peerIdFromString(peer), { signal: AbortSignal.timeout(2000) }).catch(() => {})
    }
    this.schedule()
  }

  /**
   * Fills the peer set up to its dial target, rotates it when due, and sets
   * a timer for the next retry or rotation.
   */
  schedule (): void {
    if (this.stopped || this.held) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    const parallel = this.init.parallelDials ?? DEFAULT_PARALLEL_DIALS
    const due = new Map(this.book.due(candidate => this.init.gate.mayConnect(candidate)).map(entry => [entry.peer, entry]))
    const fellow = (peer: string): boolean => this.init.isFellowFetcher?.(peer) ?? false
    const connected = this.book.connectedPeers().map(({ peer, since, siteCache }) => ({ peer, since, siteCache, originFetcher: fellow(peer), usefulChunks: this.init.usefulChunks?.(peer) ?? 0 }))
    const plan = this.policy.plan(connected, [...due.values()].map(({ peer }) => ({ peer, siteCache: this.book.isSiteCache(peer), originFetcher: fellow(peer) })), this.dials)
    for (const peer of plan.drop) {
      this.init.logger.debug({ peer }, 'rotating a peer out of the peer set')
      void this.node.hangUp(peerIdFromString(peer), { signal: AbortSignal.timeout(2000) }).catch(() => {})
    }
    for (const peer of plan.dial) {
      if (this.dials >= parallel) break
      const { addresses, failing } = due.get(peer)!
      void this.dial(peer, addresses, failing)
    }
    const room = connected.length - plan.drop.length + this.dials < this.policy.dialTarget
    const retry = room && this.dials < parallel ? this.book.nextRetryAt() : undefined
    const next = Math.min(retry ?? Number.POSITIVE_INFINITY, this.policy.nextRotationAt)
    if (Number.isFinite(next)) {
      this.timer = setTimeout(() => { this.schedule() }, Math.min(2 ** 31 - 1, Math.max(50, next - this.now())))
      this.timer.unref()
    }
  }

  private async dial (peer: string, addresses: string[], failing: string[]): Promise<void> {
    this.book.dialing(peer)
    this.dials++
    try {
      const peerId = peerIdFromString(peer)
      const parsed: Multiaddr[] = []
      for (const address of addresses) {
        try { parsed.push(multiaddr(address)) } catch {}
      }
      if (failing.length > 0 && await this.node.peerStore.has(peerId)) {
        // Addresses backing off leave the peer store, or libp2p would dial them along with the others.
        const known = (await this.node.peerStore.get(peerId)).addresses.map(address => address.multiaddr)
        const kept = known.filter(address => !failing.includes(address.toString()))
        await this.node.peerStore.patch(peerId, { multiaddrs: [...kept, ...parsed] })
      } else if (parsed.length > 0) {
        await this.node.peerStore.merge(peerId, { multiaddrs: parsed })
      }
      await this.node.dial(peerId, { signal: AbortSignal.timeout(this.init.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS) })
      this.book.connected(peer)
    } catch (error) {
      this.init.logger.debug({ peer, addresses, err: describeError(error) }, 'cannot dial a site peer')
      this.book.dialFailed(peer)
    } finally {
      this.dials--
      this.schedule()
    }
  }
}
