import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { privateKeyFromRaw } from '@libp2p/crypto/keys'
import { gossipsub, type GossipsubOpts } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { ConnectionGater, Libp2p } from '@libp2p/interface'
import { mdns } from '@libp2p/mdns'
import { tcp } from '@libp2p/tcp'
import { isLoopback } from '@libp2p/utils'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import type { Ed25519KeyPair } from '../../protocol/index.js'
import { MAX_PIECE_BYTES } from '../protocols/chunk/constants.js'
import { privateNetwork, type PreSharedKeyMismatchError } from './private-network.js'
import { installHalfWindowUpdates, YAMUX_MESSAGE_BYTES } from './yamux-tuning.js'

export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/8651']
export const DEFAULT_MAX_CONNECTIONS = 128
export const DEFAULT_MAX_INCOMING_PENDING_CONNECTIONS = 32
/** New inbound connections per second from one address: loopback and a NATed site put many peers behind one. */
export const DEFAULT_INBOUND_CONNECTION_THRESHOLD = 100
export const DEFAULT_DIAL_TIMEOUT_MS = 10_000
export const DEFAULT_UPGRADE_TIMEOUT_MS = 10_000
/**
 * The mDNS service's own query interval: it queries once at start, and the
 * agent's MdnsQueries schedule (see mdns-queries.ts) sends the others.
 */
const MDNS_SERVICE_INTERVAL_MS = 2 ** 31 - 1
/**
 * Each piece travels on a fresh stream: a window that holds a whole piece
 * (1 MiB and its framing) spares it a window-update round trip per 256 KiB.
 */
export const DEFAULT_STREAM_WINDOW_BYTES = MAX_PIECE_BYTES + 64 * 1024
export const AGENT_USER_AGENT = 'meshdeploy-agent'
/** Streams a peer may have open on one connection over every protocol (each protocol has its own, lower bound too). */
export const DEFAULT_MAX_STREAMS_PER_CONNECTION = 256

export interface MeshNodeInit {
  /** The device key: the peer id follows from it. */
  key: Ed25519KeyPair
  /** @default ['/ip4/0.0.0.0/tcp/8651'] */
  listen?: string[]
  /** Addresses to announce instead of the listening ones (a port forward, a fixed name). */
  announce?: string[]
  /** Discover site peers with multicast DNS. @default true */
  mdns?: boolean
  /** Peers answer only queries with their organisation's tag. */
  mdnsServiceTag: string
  /** Receives the function that sends one mDNS query, for the agent's own schedule of queries. */
  onMdnsQuery?: (query: () => void) => void
  gater: ConnectionGater
  /** @default 128 */
  maxConnections?: number
  /** @default 32 */
  maxIncomingPendingConnections?: number
  /** @default 100 */
  inboundConnectionThreshold?: number
  /** @default 10000 */
  dialTimeoutMs?: number
  /** @default 10000 */
  upgradeTimeoutMs?: number
  /** Initial yamux receive window of a stream. @default 1 MiB + 64 KiB */
  streamWindowBytes?: number
  /** Inbound and outbound streams per connection, over every protocol. @default 256 */
  maxStreamsPerConnection?: number
  /** The private network's swarm key file (a pre-shared key under noise); absent: none. */
  swarmKey?: Uint8Array
  /** An inbound connection refused for another pre-shared key. */
  onPreSharedKeyMismatch?: (error: PreSharedKeyMismatchError) => void
  /** Status gossip: the gossipsub service (`services.pubsub`) with these settings. @default absent (no gossipsub) */
  gossip?: Partial<GossipsubOpts>
}

/** The organisation's mDNS service tag, from the coordinator key the agent pinned. */
export function mdnsServiceTagOf (coordinatorKeyId: string): string {
  return `_meshdeploy-${coordinatorKeyId.slice(0, 16)}._udp.local`
}

/**
 * What the node tells others (mDNS answers, identify, the coordinator's
 * list): loopback addresses only when there is nothing else, so a LAN
 * never hears of 127.0.0.1 while loopback tests still find each other.
 */
export function announceable (addresses: Multiaddr[]): Multiaddr[] {
  const routable = addresses.filter(address => !isLoopback(address))
  return routable.length > 0 ? routable : addresses
}

/** Creates and starts the agent's libp2p node: tcp, a private network when given its key, noise, yamux, identify, gossipsub and mDNS when enabled, explicit limits. */
export async function createMeshNode (init: MeshNodeInit): Promise<Libp2p> {
  installHalfWindowUpdates()
  const privateKey = privateKeyFromRaw(new Uint8Array([...init.key.secretKey, ...init.key.publicKey]))
  const listen = init.listen ?? DEFAULT_LISTEN
  for (const address of [...listen, ...(init.announce ?? [])]) multiaddr(address)
  return await createLibp2p({
    privateKey,
    nodeInfo: { name: 'meshdeploy', userAgent: AGENT_USER_AGENT },
    addresses: {
      listen,
      ...(init.announce !== undefined && init.announce.length > 0 ? { announce: init.announce } : {}),
      announceFilter: announceable
    },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({
      maxMessageSize: YAMUX_MESSAGE_BYTES,
      maxInboundStreams: init.maxStreamsPerConnection ?? DEFAULT_MAX_STREAMS_PER_CONNECTION,
      maxOutboundStreams: init.maxStreamsPerConnection ?? DEFAULT_MAX_STREAMS_PER_CONNECTION,
      streamOptions: { initialStreamWindowSize: init.streamWindowBytes ?? DEFAULT_STREAM_WINDOW_BYTES }
    })],
    ...(init.swarmKey !== undefined
      ? { connectionProtector: privateNetwork({ swarmKey: init.swarmKey, ...(init.onPreSharedKeyMismatch !== undefined ? { onMismatch: init.onPreSharedKeyMismatch } : {}) }) }
      : {}),
    connectionGater: init.gater,
    connectionManager: {
      maxConnections: init.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      maxIncomingPendingConnections: init.maxIncomingPendingConnections ?? DEFAULT_MAX_INCOMING_PENDING_CONNECTIONS,
      inboundConnectionThreshold: init.inboundConnectionThreshold ?? DEFAULT_INBOUND_CONNECTION_THRESHOLD,
      dialTimeout: init.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS,
      inboundUpgradeTimeout: init.upgradeTimeoutMs ?? DEFAULT_UPGRADE_TIMEOUT_MS
    },
    peerDiscovery: init.mdns ?? true
      ? [components => {
          const service = mdns({ serviceTag: init.mdnsServiceTag, interval: MDNS_SERVICE_INTERVAL_MS })(components) as ReturnType<ReturnType<typeof mdns>> & { mdns?: { query: (packet: { questions: Array<{ name: string, type: 'PTR' }> }) => void } }
          init.onMdnsQuery?.(() => { service.mdns?.query({ questions: [{ name: init.mdnsServiceTag, type: 'PTR' }] }) })
          return service
        }]
      : [],
    services: {
      identify: identify(),
      ...(init.gossip !== undefined ? { pubsub: gossipsub(init.gossip) } : {})
    }
  })
}

/** The node's announced addresses without the /p2p/ suffix, as the coordinator hands them out. */
export function announcedAddresses (node: Libp2p): string[] {
  return node.getMultiaddrs().map(address => address.toString().replace(/\/p2p\/[^/]+$/, ''))
}
