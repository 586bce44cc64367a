import { EventEmitter } from 'node:events'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { describeError } from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import * as chunk from '../protocols/chunk/index.js'
import * as have from '../protocols/have/index.js'
import type { HaveMessage } from '../protocols/have/index.js'
import { FrameTooLargeError, TruncatedFrameError, asError } from '../protocols/frames.js'
import { RefusalLog } from '../refusals.js'
import type { TokenBucket } from '../download/token-bucket.js'
import { MeshdeployError } from '../../protocol/errors.js'

export interface MeshNetworkEvents {
  /** The announcement channel to the peer is open: it can be told what this agent wants and holds. */
  connected: [peer: string]
  disconnected: [peer: string]
  message: [peer: string, message: HaveMessage]
  /** This side closed every connection to the peer for what it did. */
  'hung-up': [peer: string]
}

/** The peer is not connected (any more). */
export class PeerNotConnectedError extends MeshdeployError {
  readonly peer: string
  constructor (peer: string, options?: ErrorOptions) {
    super(`peer ${peer} is not connected`, 'peer-not-connected', options)
    this.name = 'PeerNotConnectedError'
    this.peer = peer
  }
}

/**
 * What the exchange logic needs of the network. The libp2p implementation
 * below is the only code that touches streams; tests of the logic use a
 * stub.
 */
export interface MeshNetwork extends EventEmitter<MeshNetworkEvents> {
  readonly selfId: string
  /** Peers whose announcement channel is open. */
  connectedPeers: () => string[]
  /** Queues an announcement to one peer; dropped if the peer is not connected. */
  send: (peer: string, message: HaveMessage) => void
  /** Asks a connected peer for a piece; throws PeerNotConnectedError, PieceRefusedError, PieceStalledError… */
  requestPiece: (peer: string, request: chunk.PieceRequest, options: chunk.RequestPieceOptions) => Promise<Uint8Array>
  /** Closes every connection to the peer. */
  hangUp: (peer: string) => Promise<void>
}

export interface Libp2pMeshNetworkInit {
  node: Libp2p
  logger: Logger
  /** What this agent serves to peers. */
  pieces: chunk.PieceSource
  /** Paces every upload of this agent. */
  uploadBucket?: TokenBucket
  /** @default chunk.DEFAULT_MAX_CONCURRENT_UPLOADS */
  maxConcurrentUploads?: number
  /** Whether a peer may be served (a peer that a download banned is not). */
  mayServe?: (peer: string) => boolean
  /** Each peer's piece-request budget. @default the defaults of ChunkAdmission */
  admission?: chunk.ChunkAdmissionInit
  /** A peer that keeps asking while over its budget: the caller suspends it; the network hangs up. */
  onAbuse?: (peer: string) => void
  /** @default chunk.IDLE_TIMEOUT_MS */
  pieceIdleTimeoutMs?: number
  /** @default chunk.MIN_PROGRESS_BYTES */
  minPieceProgressBytes?: number
  /** Where refusals are logged. @default a refusal log on `logger` */
  refusals?: RefusalLog
  /** Bytes uploaded to a peer. */
  onUploaded?: (peer: string, bytes: number) => void
  /**
   * Resolves whether a connected peer is admitted (its device certificate
   * verified); streams of a peer wait for it, and are dropped when it is
   * refused. @default every connected peer is
   */
  admitted?: (peer: string, signal: AbortSignal) => Promise<boolean>
}

/** How long a peer's streams wait for its admission. */
const ADMISSION_TIMEOUT_MS = 15_000

/** The have/interest and chunk protocols over a libp2p node. */
export class Libp2pMeshNetwork extends EventEmitter<MeshNetworkEvents> implements MeshNetwork {
  readonly selfId: string
  private readonly node: Libp2p
  private readonly logger: Logger
  private readonly server: chunk.ChunkServer
  private readonly admission: chunk.ChunkAdmission
  private readonly refusals: RefusalLog
  private readonly pieceOptions: Pick<chunk.RequestPieceOptions, 'idleTimeoutMs' | 'minProgressBytes'>
  private readonly senders = new Map<string, have.HaveSender>()
  private readonly opening = new Set<string>()
  /** Messages for a connected peer whose channel is still opening: sent once it is open. */
  private readonly pending = new Map<string, HaveMessage[]>()
  private readonly stopController = new AbortController()
  private readonly admitted: (peer: string, signal: AbortSignal) => Promise<boolean>
  private readonly onPeerConnect = (event: CustomEvent<PeerId>): void => { void this.openChannel(event.detail.toString()) }
  private readonly onPeerDisconnect = (event: CustomEvent<PeerId>): void => { this.closeChannel(event.detail.toString()) }

  constructor (init: Libp2pMeshNetworkInit) {
    super()
    this.node = init.node
    this.selfId = init.node.peerId.toString()
    this.logger = init.logger
    this.refusals = init.refusals ?? new RefusalLog({ logger: init.logger })
    this.admitted = init.admitted ?? (async () => true)
    this.admission = new chunk.ChunkAdmission(init.admission)
    this.pieceOptions = {
      ...(init.pieceIdleTimeoutMs !== undefined ? { idleTimeoutMs: init.pieceIdleTimeoutMs } : {}),
      ...(init.minPieceProgressBytes !== undefined ? { minProgressBytes: init.minPieceProgressBytes } : {})
    }
    this.server = new chunk.ChunkServer({
      source: init.pieces,
      admission: this.admission,
      ...(init.uploadBucket !== undefined ? { uploadBucket: init.uploadBucket } : {}),
      ...(init.maxConcurrentUploads !== undefined ? { maxConcurrentUploads: init.maxConcurrentUploads } : {}),
      ...(init.mayServe !== undefined ? { mayServe: init.mayServe } : {}),
      ...(init.onUploaded !== undefined ? { onUploaded: init.onUploaded } : {}),
      onRefused: (peer, reason, message) => {
        this.refusals.refuse({ subject: 'peer', reason, peer, message: `piece request refused: ${message}` })
      },
      onAbuse: peer => {
        this.refusals.refuse({ subject: 'peer', reason: 'request-flood', peer, message: 'it kept asking for pieces while told to wait; disconnecting it' })
        this.admission.forget(peer)
        init.onAbuse?.(peer)
        void this.hangUp(peer)
      }
    })
  }

  async start (): Promise<void> {
    await this.node.handle(have.PROTOCOL, (stream: Stream, connection: Connection) => {
      const peer = connection.remotePeer.toString()
      void this.whenAdmitted(stream, peer, async () => { await this.readChannel(stream, peer) })
    }, {
      maxInboundStreams: have.MAX_INBOUND_STREAMS,
      maxOutboundStreams: have.MAX_OUTBOUND_STREAMS
    })
    await this.node.handle(chunk.PROTOCOL, (stream: Stream, connection: Connection) => {
      const peer = connection.remotePeer.toString()
      void this.whenAdmitted(stream, peer, async () => { await this.server.handle(stream, peer, { signal: this.stopController.signal }) })
    }, {
      maxInboundStreams: chunk.MAX_INBOUND_STREAMS,
      maxOutboundStreams: chunk.MAX_OUTBOUND_STREAMS
    })
    this.node.addEventListener('peer:connect', this.onPeerConnect)
    this.node.addEventListener('peer:disconnect', this.onPeerDisconnect)
    for (const peer of this.node.getPeers()) void this.openChannel(peer.toString())
  }

  /** Serves a peer's stream once the peer is admitted; drops it if it is not. */
  private async whenAdmitted (stream: Stream, peer: string, serve: () => Promise<void>): Promise<void> {
    const admitted = await this.admitted(peer, AbortSignal.any([this.stopController.signal, AbortSignal.timeout(ADMISSION_TIMEOUT_MS)]))
    if (!admitted) {
      stream.abort(new PeerNotConnectedError(peer))
      return
    }
    await serve()
  }

  async stop (): Promise<void> {
    this.stopController.abort()
    this.node.removeEventListener('peer:connect', this.onPeerConnect)
    this.node.removeEventListener('peer:disconnect', this.onPeerDisconnect)
    await Promise.all([...this.senders.values()].map(async sender => { await sender.close({ signal: AbortSignal.timeout(1000) }) }))
    this.senders.clear()
    await this.node.unhandle([have.PROTOCOL, chunk.PROTOCOL])
  }

  get activeUploads (): number {
    return this.server.activeUploads
  }

  connectedPeers (): string[] {
    return [...this.senders.keys()]
  }

  private async openChannel (peer: string): Promise<void> {
    if (this.senders.has(peer) || this.opening.has(peer) || this.stopController.signal.aborted) return
    this.opening.add(peer)
    try {
      if (!await this.admitted(peer, AbortSignal.any([this.stopController.signal, AbortSignal.timeout(ADMISSION_TIMEOUT_MS)]))) return
      const stream = await this.node.dialProtocol(peerIdFromString(peer), have.PROTOCOL, {
        signal: AbortSignal.any([this.stopController.signal, AbortSignal.timeout(have.OPEN_TIMEOUT_MS)])
      })
      if (this.node.getConnections(peerIdFromString(peer)).length === 0) {
        stream.abort(new PeerNotConnectedError(peer))
        return
      }
      const sender = new have.HaveSender(stream, {
        onError: error => {
          this.logger.debug({ peer, err: describeError(error) }, 'announcement channel failed')
          // A channel that failed says nothing against the peer: hung up on, but not held back from a redial.
          if (this.senders.get(peer) === sender) void this.disconnect(peer)
        }
      })
      this.senders.set(peer, sender)
      for (const message of this.pending.get(peer) ?? []) sender.send(message)
      this.pending.delete(peer)
      this.logger.debug({ peer }, 'peer connected')
      this.emit('connected', peer)
    } catch (error) {
      // A peer that refuses us (not enrolled here, or it banned us) drops the connection; nothing to keep.
      this.logger.debug({ peer, err: describeError(error) }, 'cannot open the announcement channel')
    } finally {
      this.opening.delete(peer)
      this.pending.delete(peer)
    }
  }

  private closeChannel (peer: string): void {
    this.pending.delete(peer)
    const sender = this.senders.get(peer)
    if (sender === undefined) return
    this.senders.delete(peer)
    void sender.close({ signal: AbortSignal.timeout(1000) })
    this.logger.debug({ peer }, 'peer disconnected')
    this.emit('disconnected', peer)
  }

  private async readChannel (stream: Stream, peer: string): Promise<void> {
    try {
      await have.readHaveMessages(stream, message => { this.emit('message', peer, message) }, { signal: this.stopController.signal })
    } catch (error) {
      if (this.stopController.signal.aborted) return
      const reason = asError(error)
      stream.abort(reason)
      if (reason instanceof have.MalformedHaveMessageError || reason instanceof FrameTooLargeError || reason instanceof TruncatedFrameError) {
        this.refusals.refuse({ subject: 'peer', reason: 'malformed-announcement', peer, message: `a malformed announcement (${describeError(reason)}); disconnecting it` })
        await this.hangUp(peer)
      }
    }
  }

  send (peer: string, message: HaveMessage): void {
    const sender = this.senders.get(peer)
    if (sender !== undefined) {
      sender.send(message)
      return
    }
    // A peer whose announcements arrive before our channel to it is open must still get the answers.
    if (!this.opening.has(peer)) return
    const queue = this.pending.get(peer) ?? []
    if (queue.length < have.MAX_QUEUED_MESSAGES) queue.push(message)
    this.pending.set(peer, queue)
  }

  async requestPiece (peer: string, request: chunk.PieceRequest, options: chunk.RequestPieceOptions): Promise<Uint8Array> {
    const connection = this.node.getConnections(peerIdFromString(peer)).find(candidate => candidate.status === 'open')
    if (connection === undefined) throw new PeerNotConnectedError(peer)
    const stream = await connection.newStream(chunk.PROTOCOL, {
      signal: AbortSignal.any([options.signal, AbortSignal.timeout(chunk.OPEN_TIMEOUT_MS)]),
      maxOutboundStreams: chunk.MAX_OUTBOUND_STREAMS
    })
    try {
      return await chunk.requestPiece(stream, request, { ...this.pieceOptions, ...options })
    } catch (error) {
      const reason = asError(error)
      stream.abort(reason)
      // A connection closed meanwhile (by this side too) cuts answers short: that is no statement of the peer's.
      if (connection.status !== 'open') throw new PeerNotConnectedError(peer, { cause: reason })
      throw reason
    }
  }

  /** Hangs up on a peer for what it did (bad chunks, a request flood, malformed announcements). */
  async hangUp (peer: string): Promise<void> {
    this.emit('hung-up', peer)
    await this.disconnect(peer)
  }

  private async disconnect (peer: string): Promise<void> {
    this.closeChannel(peer)
    await this.node.hangUp(peerIdFromString(peer), { signal: AbortSignal.timeout(2000) }).catch(() => {})
  }
}
