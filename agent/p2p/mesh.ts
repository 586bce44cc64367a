import { EventEmitter } from 'node:events'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Libp2p } from '@libp2p/interface'
import { trustKeys, type SignedEnvelope } from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import type { ChunkCache } from '../cache.js'
import type { PackageFetcher } from '../download/downloader.js'
import { MeshFetcher, type MeshFetcherInit } from '../download/mesh-fetcher.js'
import type { ChunkOrigin } from '../download/origin-source.js'
import { TokenBucket } from '../download/token-bucket.js'
import type { Identity } from '../identity.js'
import type { PieceSource } from '../protocols/chunk/index.js'
import { Discovery } from './discovery.js'
import { CertificateExchange } from './certificate-exchange.js'
import { PeerGate, type PeerRefusalReason } from './gater.js'
import { Libp2pMeshNetwork, type MeshNetwork } from './network.js'
import { swarmKeyIdOf } from './private-network.js'
import { DEFAULT_ABUSE_SUSPENSION_MS } from '../protocols/chunk/index.js'
import { RefusalLog } from '../refusals.js'
import { MdnsQueries, MdnsQueryPolicy } from './mdns-queries.js'
import { announcedAddresses, createMeshNode, mdnsServiceTagOf, type MeshNodeInit } from './node.js'
import { enforceConnectionLimit } from './connection-limit.js'
import { DEFAULT_MAX_PEERS, type PeerSetPolicyInit } from './peer-set.js'
import { Libp2pStatusGossip, statusGossipOptions } from './status-gossip.js'
import type { SiteStatusInit } from '../status/site-status.js'

export interface MeshSettings {
  /** @default DEFAULT_LISTEN (all interfaces, port 8651) */
  listen?: string[]
  /** Addresses to announce instead of the listening ones. */
  announce?: string[]
  /** @default true */
  mdns?: boolean
  /** Dial the site peers the coordinator lists. @default true */
  usePeerList?: boolean
  /** Cap on what this agent uploads to peers, bytes per second; absent: none. */
  uploadBytesPerSecond?: number
  /**
   * Alters the pieces this agent serves. For tests only (a peer that serves
   * corrupt chunks); no command-line option or environment variable sets it.
   */
  servePieces?: (source: PieceSource) => PieceSource
  /** Tuning of the downloads (picker, election). */
  swarm?: MeshFetcherInit['swarm']
  /** Status records go up through the site's gossip and its elected relay. @default true */
  statusGossip?: boolean
  /** Tuning of the status path (heartbeats, republishing, the relay's batches). */
  siteStatus?: Omit<SiteStatusInit, 'gossip' | 'outbox' | 'poster' | 'reachability' | 'logger' | 'now'>
  /**
   * The bounded, rotating set of site peers this agent keeps connections to
   * (`maxPeers` is also the node's connection limit unless `node.maxConnections` says otherwise).
   */
  peerSet?: Omit<PeerSetPolicyInit, 'now' | 'random'>
  /** Tuning of the node (limits, timeouts). */
  node?: Pick<MeshNodeInit, 'maxConnections' | 'maxIncomingPendingConnections' | 'inboundConnectionThreshold' | 'dialTimeoutMs' | 'upgradeTimeoutMs' | 'maxStreamsPerConnection'>
  /**
   * The organisation's swarm key file (`meshdeploy agent swarm-key`): every
   * connection is encrypted with it beneath noise, and peers without it are
   * refused before their handshake. Absent: no private network.
   */
  swarmKey?: Uint8Array
  /** Limits of the chunk exchange. */
  exchange?: ExchangeLimits
}

export interface ExchangeLimits {
  /** Piece requests a peer may make per second. @default chunk.DEFAULT_REQUESTS_PER_SECOND */
  requestsPerSecond?: number
  /** @default chunk.DEFAULT_REQUEST_BURST */
  requestBurst?: number
  /** Refusals for its rate within 10 s after which a peer is disconnected. @default chunk.DEFAULT_REFUSALS_BEFORE_DISCONNECT */
  refusalsBeforeDisconnect?: number
  /** How long a peer disconnected for a request flood is refused. @default chunk.DEFAULT_ABUSE_SUSPENSION_MS */
  abuseSuspensionMs?: number
  /** Longest a piece may go without progress before it is asked elsewhere. @default chunk.IDLE_TIMEOUT_MS */
  pieceIdleTimeoutMs?: number
  /** What counts as progress. @default chunk.MIN_PROGRESS_BYTES */
  minPieceProgressBytes?: number
}

export interface MeshInit extends MeshSettings {
  identity: Identity
  cache: ChunkCache
  origin: ChunkOrigin
  logger: Logger
  /** Where refusals are logged. @default a refusal log on `logger` */
  refusals?: RefusalLog
  /** The device certificate the agent last had, so a restart does not wait for the coordinator. */
  certificate?: SignedEnvelope
  /** The revoked devices the agent last heard of. */
  revokedDeviceIds?: string[]
  /** The site's status topic: its agents gossip their status records there. Absent: no status gossip. */
  statusTopic?: string
  /** Observes the exchange (metrics): wraps the network and what is served; behaviour stays the same. */
  instrument?: { network: <T extends MeshNetwork>(network: T) => T, pieces: (source: PieceSource) => PieceSource }
}

const GATE_REFUSALS: Record<PeerRefusalReason, string> = {
  'peer-not-allowed': 'not an enrolled, active device of the organisation',
  'peer-banned': 'banned by a download for sending bad chunks',
  'peer-suspended': 'suspended for flooding this agent with requests'
}

/**
 * The agent's part in its site's mesh: a libp2p node whose peer id is the
 * device key's, a gate that admits only enrolled devices, discovery of the
 * site peers, and the fetcher that gets chunks from them first.
 */
export class Mesh extends EventEmitter<{ changed: [] }> {
  readonly node: Libp2p
  readonly gate: PeerGate
  readonly fetcher: MeshFetcher
  /** The site's status topic; absent when not asked for. */
  statusGossip?: Libp2pStatusGossip
  private readonly network: Libp2pMeshNetwork
  private readonly discovery: Discovery
  private readonly logger: Logger
  private lastAddresses = ''
  /** Site peers' device ids, from the coordinator's list: a peer's gossiped records must name its device. */
  private readonly devicesByPeer = new Map<string, string>()
  /** The site's size as the coordinator last said (its peer sample is bounded): a large site has origin fetchers. */
  siteDevices = 0
  private readonly stopConnectionLimit: () => void
  private certificate?: SignedEnvelope
  private exchange?: CertificateExchange
  private mdnsQueries?: MdnsQueries

  private constructor (node: Libp2p, gate: PeerGate, network: Libp2pMeshNetwork, fetcher: MeshFetcher, discovery: Discovery, logger: Logger, stopConnectionLimit: () => void) {
    super()
    this.stopConnectionLimit = stopConnectionLimit
    this.node = node
    this.gate = gate
    this.network = network
    this.fetcher = fetcher
    this.discovery = discovery
    this.logger = logger
  }

  static async start (init: MeshInit): Promise<Mesh> {
    const logger = init.logger.child({ component: 'mesh' })
    const refusals = init.refusals ?? new RefusalLog({ logger })
    let fetcher: MeshFetcher | undefined
    const gate = new PeerGate({
      certificates: true,
      isBanned: peer => fetcher?.isBanned(peer) ?? false,
      onRefused: (peer, reason, direction) => {
        refusals.refuse({ subject: 'peer', reason, peer, message: `${direction} connection refused by the gater (${GATE_REFUSALS[reason]})`, details: { direction } })
      }
    })
    gate.setRevoked(init.revokedDeviceIds ?? [])
    const exchange = init.exchange ?? {}
    const maxConnections = init.node?.maxConnections ?? init.peerSet?.maxPeers ?? DEFAULT_MAX_PEERS
    // Set while the node is built (its mDNS service hands out its query).
    let mdnsQuery: (() => void) | undefined
    const node = await createMeshNode({
      ...init.node,
      maxConnections,
      key: init.identity.key,
      ...(init.listen !== undefined ? { listen: init.listen } : {}),
      ...(init.announce !== undefined ? { announce: init.announce } : {}),
      mdns: init.mdns ?? true,
      mdnsServiceTag: mdnsServiceTagOf(init.identity.coordinatorKeyId),
      onMdnsQuery: query => { mdnsQuery = query },
      gater: gate.connectionGater(),
      ...(init.statusTopic !== undefined ? { gossip: statusGossipOptions({ topic: init.statusTopic, isAllowed: peer => gate.allows(peer) }) } : {}),
      ...(init.swarmKey !== undefined
        ? {
            swarmKey: init.swarmKey,
            onPreSharedKeyMismatch: error => { refusals.refuse({ subject: 'peer', reason: 'psk-mismatch', address: error.address, message: error.message }) }
          }
        : {})
    })
    const peerBound = Math.min(maxConnections, init.peerSet?.maxPeers ?? maxConnections)
    let discoveryRef: Discovery | undefined
    let meshRef: Mesh | undefined
    const stopConnectionLimit = enforceConnectionLimit(node, {
      maxConnections,
      onRefused: connection => {
        refusals.refuse({ subject: 'peer', reason: 'connection-limit', peer: connection.remotePeer.toString(), message: `inbound connection refused: this agent holds its limit of ${maxConnections} connections` })
        // A fellow origin fetcher that found no room: this side makes room and dials it.
        if (fetcher?.isFellowFetcher(connection.remotePeer.toString()) === true) discoveryRef?.schedule()
      }
    })
    try {
      if (node.peerId.toString() !== init.identity.peerId) throw new Error(`the node's peer id ${node.peerId.toString()} is not the enrolled ${init.identity.peerId}`)
      const uploadBucket = init.uploadBytesPerSecond !== undefined ? new TokenBucket({ bytesPerSecond: init.uploadBytesPerSecond }) : undefined
      const pieces: PieceSource = {
        readPiece: async (request, options) => await fetcher!.pieces.readPiece(request, options),
        donePiece: bytes => { fetcher!.pieces.donePiece?.(bytes) }
      }
      const served = init.servePieces?.(pieces) ?? pieces
      const libp2pNetwork = new Libp2pMeshNetwork({
        node,
        logger,
        pieces: init.instrument?.pieces(served) ?? served,
        ...(uploadBucket !== undefined ? { uploadBucket } : {}),
        mayServe: peer => gate.allows(peer),
        admitted: async (peer, signal) => await gate.whenAdmitted(peer, signal),
        refusals,
        admission: {
          ...(exchange.requestsPerSecond !== undefined ? { requestsPerSecond: exchange.requestsPerSecond } : {}),
          ...(exchange.requestBurst !== undefined ? { burst: exchange.requestBurst } : {}),
          ...(exchange.refusalsBeforeDisconnect !== undefined ? { refusalsBeforeDisconnect: exchange.refusalsBeforeDisconnect } : {})
        },
        onAbuse: peer => { gate.suspend(peer, Date.now() + (exchange.abuseSuspensionMs ?? DEFAULT_ABUSE_SUSPENSION_MS)) },
        ...(exchange.pieceIdleTimeoutMs !== undefined ? { pieceIdleTimeoutMs: exchange.pieceIdleTimeoutMs } : {}),
        ...(exchange.minPieceProgressBytes !== undefined ? { minPieceProgressBytes: exchange.minPieceProgressBytes } : {})
      })
      const network = init.instrument?.network(libp2pNetwork) ?? libp2pNetwork
      let discovery: Discovery | undefined
      fetcher = new MeshFetcher({
        knownPeers: () => Math.max(discovery?.book.size ?? 0, (meshRef?.siteDevices ?? 0) - 1),
        sitePeers: () => discovery?.book.peers() ?? [],
        network,
        cache: init.cache,
        origin: init.origin,
        logger,
        refusals,
        ...(init.swarm !== undefined ? { swarm: init.swarm } : {}),
        onBansChanged: () => {
          for (const peer of fetcher!.bannedPeers()) void network.hangUp(peer)
        }
      })
      discovery = new Discovery({
        node,
        gate,
        logger,
        usePeerList: init.usePeerList ?? true,
        // A device enrolled a moment ago gets its certificate with its first assignments answer: until then every
        // peer it dialed would refuse it.
        holdDials: init.certificate === undefined,
        peerSet: { ...init.peerSet, maxPeers: peerBound },
        usefulChunks: peer => fetcher!.usefulChunks(peer),
        isFellowFetcher: peer => fetcher!.isFellowFetcher(peer)
      })
      discoveryRef = discovery
      const mesh = new Mesh(node, gate, network, fetcher, discovery, logger, stopConnectionLimit)
      meshRef = mesh
      if (init.certificate !== undefined) mesh.certificate = init.certificate
      mesh.exchange = new CertificateExchange({
        node,
        gate,
        certificate: () => mesh.certificate,
        // The pinned key, as it follows rotations.
        keys: () => trustKeys(init.identity.coordinatorPublicKey),
        logger,
        onRefused: (peer, message) => { refusals.refuse({ subject: 'peer', reason: 'peer-not-allowed', peer, message: `connection refused: ${message}` }) }
      })
      await mesh.exchange.start()
      if (init.statusTopic !== undefined) {
        mesh.statusGossip = new Libp2pStatusGossip({
          node,
          pubsub: (node.services as { pubsub: GossipSub }).pubsub,
          topic: init.statusTopic,
          logger: logger.child({ component: 'status-gossip' }),
          isAllowed: peer => gate.allows(peer),
          refusals,
          deviceOf: peer => gate.deviceOf(peer) ?? mesh.devicesByPeer.get(peer),
          // The pinned key, as it follows rotations.
          coordinatorKeys: () => trustKeys(init.identity.coordinatorPublicKey)
        })
      }
      if (mdnsQuery !== undefined) {
        const query = mdnsQuery
        // Asked again only while this agent knows fewer site peers than its set holds, and rarely once it does.
        mesh.mdnsQueries = new MdnsQueries({ policy: new MdnsQueryPolicy(), query, wantsPeers: () => discovery.book.size < peerBound })
        mesh.mdnsQueries.start()
      }
      await network.start()
      mesh.statusGossip?.start()
      fetcher.start()
      discovery.start()
      network.on('hung-up', peer => { discovery!.hungUp(peer) })
      network.on('connected', () => { mesh.emit('changed') })
      network.on('disconnected', () => { mesh.emit('changed') })
      node.addEventListener('self:peer:update', () => {
        const addresses = mesh.addresses().join(' ')
        if (addresses === mesh.lastAddresses) return
        mesh.lastAddresses = addresses
        mesh.emit('changed')
      })
      mesh.lastAddresses = mesh.addresses().join(' ')
      logger.info({
        peerId: node.peerId.toString(),
        addresses: mesh.addresses(),
        mdns: init.mdns ?? true,
        usePeerList: init.usePeerList ?? true,
        privateNetwork: init.swarmKey !== undefined ? swarmKeyIdOf(init.swarmKey) : false
      }, 'mesh node listening')
      return mesh
    } catch (error) {
      stopConnectionLimit()
      await node.stop()
      throw error
    }
  }

  get fetchPackage (): PackageFetcher {
    return this.fetcher.fetchPackage
  }

  addresses (): string[] {
    return announcedAddresses(this.node)
  }

  connectedPeers (): number {
    return this.network.connectedPeers().length
  }

  /** Takes the device certificate, the revoked devices and the site peer sample of an assignments answer. */
  async apply (answer: { certificate?: SignedEnvelope, revokedDeviceIds?: string[], peers?: Array<{ deviceId?: string, peerId: string, addresses: string[], siteCache?: boolean }>, siteDevices?: number }): Promise<void> {
    if (typeof answer.siteDevices === 'number' && Number.isSafeInteger(answer.siteDevices) && answer.siteDevices > 0) this.siteDevices = answer.siteDevices
    if (answer.certificate !== undefined && answer.certificate.signature !== this.certificate?.signature) {
      this.certificate = answer.certificate
      this.exchange?.renewed()
      this.discovery.releaseDials()
    }
    if (answer.revokedDeviceIds !== undefined) {
      const removed = this.gate.setRevoked(answer.revokedDeviceIds)
      await this.discovery.allowListChanged(removed)
    }
    if (answer.peers !== undefined) {
      this.discovery.setPeerList(answer.peers)
      this.devicesByPeer.clear()
      for (const peer of answer.peers) if (peer.deviceId !== undefined) this.devicesByPeer.set(peer.peerId, peer.deviceId)
    }
  }

  async stop (): Promise<void> {
    this.mdnsQueries?.stop()
    await this.exchange?.stop().catch(() => {})
    this.statusGossip?.stop()
    this.discovery.stop()
    this.fetcher.stop()
    this.stopConnectionLimit()
    await this.network.stop()
    await this.node.stop()
    this.logger.debug('mesh node stopped')
  }
}
