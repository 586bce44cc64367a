import type { Libp2p, PeerId, PeerInfo } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { describeError } from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import type { PeerGate } from './gater.js'
import { PeerBook } from './peer-book.js'

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
  now?: () => number
  random?: () => number
}

/**
 * Keeps this agent connected to its site peers: those the coordinator lists
 * and those mDNS finds on the LAN, as long as the allow-list admits them.
 * Lost connections are dialed again with a growing, jittered delay.
 */
export class Discovery {
  readonly book: PeerBook
  private readonly init: DiscoveryInit
  private readonly node: Libp2p
  private readonly now: () => number
  private timer?: NodeJS.Timeout
  private dials = 0
  private stopped = false
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
  setPeerList (peers: Array<{ peerId: string, addresses: string[] }>): void {
    if (this.init.usePeerList === false) return
    const self = this.node.peerId.toString()
    this.book.setListed(peers.filter(peer => peer.peerId !== self))
    this.schedule()
  }

  /** The allow-list changed: hang up on peers that left it, dial those now admitted. */
  async allowListChanged (removed: string[]): Promise<void> {
    for (const peer of removed) {
      this.init.logger.info({ peer }, 'peer no longer enrolled; disconnecting')
      await this.node.hangUp(peerIdFromString(peer), { signal: AbortSignal.timeout(2000) }).catch(() => {})
    }
    this.schedule()
  }

  /** Dials what is due now and sets a timer for the next retry. */
  schedule (): void {
    if (this.stopped) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    const parallel = this.init.parallelDials ?? DEFAULT_PARALLEL_DIALS
    for (const { peer, addresses } of this.book.due(candidate => this.init.gate.allows(candidate))) {
      if (this.dials >= parallel) break
      void this.dial(peer, addresses)
    }
    const next = this.book.nextRetryAt()
    if (next !== undefined && this.dials < parallel) {
      this.timer = setTimeout(() => { this.schedule() }, Math.max(50, next - this.now()))
      this.timer.unref()
    }
  }

  private async dial (peer: string, addresses: string[]): Promise<void> {
    this.book.dialing(peer)
    this.dials++
    try {
      const peerId = peerIdFromString(peer)
      const parsed: Multiaddr[] = []
      for (const address of addresses) {
        try { parsed.push(multiaddr(address)) } catch {}
      }
      if (parsed.length > 0) await this.node.peerStore.merge(peerId, { multiaddrs: parsed })
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
