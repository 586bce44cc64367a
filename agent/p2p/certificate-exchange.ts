import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import {
  MAX_DEVICE_CERTIFICATE_BYTES, describeError, openDeviceCertificate, utf8, type KeyResolver, type SignedEnvelope
} from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import { FrameReader, asError, encodeFrame, sendBytes } from '../protocols/frames.js'
import type { PeerGate } from './gater.js'

/** Each side of a new connection presents its device certificate on a stream of this protocol. */
export const CERTIFICATE_PROTOCOL = '/meshdeploy/device-certificate/1.0.0'
/** Time a peer has to present a valid certificate once connected. */
export const DEFAULT_CERTIFICATE_TIMEOUT_MS = 10_000
/** A certificate envelope as JSON: its payload in base64 and a signature. */
const MAX_FRAME_BYTES = MAX_DEVICE_CERTIFICATE_BYTES * 2

/** This device has no certificate of its own yet: the connection waits for it, then ends without blaming the peer. */
class NoOwnCertificateError extends Error {
  constructor () {
    super('this device has no certificate yet')
    this.name = 'NoOwnCertificateError'
  }
}

/** The peer presented no certificate, or one that does not admit it. */
export class PeerNotCertifiedError extends Error {
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'PeerNotCertifiedError'
  }
}

export interface CertificateExchangeInit {
  node: Libp2p
  gate: PeerGate
  /** This device's certificate as the coordinator last issued it; absent until the first one arrives. */
  certificate: () => SignedEnvelope | undefined
  /** Keys trusted to sign certificates: the pinned coordinator key, as it follows rotations. */
  keys: () => KeyResolver
  logger: Logger
  /** A peer refused for its certificate (the caller logs it); the exchange hangs up on it. */
  onRefused?: (peer: string, message: string) => void
  /** @default DEFAULT_CERTIFICATE_TIMEOUT_MS */
  timeoutMs?: number
  now?: () => number
}

/**
 * Right after a connection's noise handshake, each side opens a stream and
 * sends its device certificate; the other verifies it (coordinator
 * signature over the bytes as received, the connection's peer id, expiry,
 * revocation), admits the peer in the gate and answers with its own. A peer
 * that does not speak the protocol or presents no valid certificate is hung
 * up on, before any other protocol serves it (they wait for the gate).
 */
export class CertificateExchange {
  private readonly init: CertificateExchangeInit
  private readonly timeoutMs: number
  private readonly now: () => number
  private readonly stopping = new AbortController()
  /** Exchanges waiting for this device's first certificate. */
  private readonly waitingForOwn = new Set<() => void>()
  private readonly onOpen = (event: CustomEvent<Connection>): void => { void this.present(event.detail) }

  constructor (init: CertificateExchangeInit) {
    this.init = init
    this.timeoutMs = init.timeoutMs ?? DEFAULT_CERTIFICATE_TIMEOUT_MS
    this.now = init.now ?? Date.now
  }

  async start (): Promise<void> {
    await this.init.node.handle(CERTIFICATE_PROTOCOL, (stream: Stream, connection: Connection) => { void this.answer(stream, connection) }, {
      maxInboundStreams: 2,
      maxOutboundStreams: 2
    })
    this.init.node.addEventListener('connection:open', this.onOpen)
    for (const connection of this.init.node.getConnections()) void this.present(connection)
  }

  async stop (): Promise<void> {
    this.stopping.abort()
    this.init.node.removeEventListener('connection:open', this.onOpen)
    await this.init.node.unhandle(CERTIFICATE_PROTOCOL)
  }

  /**
   * This device got a new certificate. The first one resumes the exchanges
   * that waited for it; a renewal is presented to the connected peers.
   */
  renewed (): void {
    if (this.waitingForOwn.size > 0) {
      for (const resume of [...this.waitingForOwn]) resume()
      return
    }
    for (const connection of this.init.node.getConnections()) void this.present(connection)
  }

  /**
   * This device's certificate as a frame. A device enrolled a moment ago
   * may not have it yet (it comes with the first assignments answer): the
   * exchange waits for it rather than presenting nothing, which the peer
   * would refuse.
   */
  private async ownFrame (signal: AbortSignal): Promise<Uint8Array> {
    let certificate = this.init.certificate()
    if (certificate === undefined) {
      await new Promise<void>((resolve, reject) => {
        const resume = (): void => {
          signal.removeEventListener('abort', aborted)
          this.waitingForOwn.delete(resume)
          resolve()
        }
        const aborted = (): void => {
          this.waitingForOwn.delete(resume)
          reject(new NoOwnCertificateError())
        }
        if (signal.aborted) { aborted(); return }
        signal.addEventListener('abort', aborted, { once: true })
        this.waitingForOwn.add(resume)
      })
      certificate = this.init.certificate()
      if (certificate === undefined) throw new NoOwnCertificateError()
    }
    return encodeFrame(utf8(JSON.stringify(certificate))).subarray()
  }

  private signal (): AbortSignal {
    return AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.timeoutMs)])
  }

  /** Opens the exchange on a new connection: ours first, then the peer's. */
  private async present (connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const signal = this.signal()
    let stream: Stream | undefined
    try {
      const own = await this.ownFrame(signal)
      stream = await connection.newStream(CERTIFICATE_PROTOCOL, { signal })
      await sendBytes(stream, own, { signal })
      const frame = await new FrameReader(stream, { maxFrameBytes: MAX_FRAME_BYTES }).read({ signal })
      this.accept(peer, frame?.subarray())
      await stream.close({ signal }).catch(() => {})
    } catch (error) {
      stream?.abort(asError(error))
      await this.refuse(peer, connection, error)
    }
  }

  /** Answers a peer's exchange: its certificate first, then ours. */
  private async answer (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const signal = this.signal()
    try {
      const frame = await new FrameReader(stream, { maxFrameBytes: MAX_FRAME_BYTES }).read({ signal })
      this.accept(peer, frame?.subarray())
      await sendBytes(stream, await this.ownFrame(signal), { signal })
      await stream.close({ signal }).catch(() => {})
    } catch (error) {
      stream.abort(asError(error))
      await this.refuse(peer, connection, error)
    }
  }

  private accept (peer: string, bytes: Uint8Array | undefined): void {
    if (bytes === undefined || bytes.byteLength === 0) throw new PeerNotCertifiedError('it presented no device certificate')
    try {
      const certificate = openDeviceCertificate(bytes, { keys: this.init.keys(), now: this.now(), peerId: peer, isRevoked: deviceId => this.init.gate.isRevoked(deviceId) })
      this.init.gate.certify(peer, certificate)
    } catch (error) {
      throw new PeerNotCertifiedError(`its device certificate does not admit it (${describeError(error)})`, { cause: error })
    }
  }

  private async refuse (peer: string, connection: Connection, error: unknown): Promise<void> {
    if (this.stopping.signal.aborted || connection.status !== 'open') return
    if (error instanceof NoOwnCertificateError) {
      // Nothing the peer did: the connection is closed, and dialed again once this device has its certificate.
      this.init.logger.debug({ peer }, 'no certificate of this device to present yet; hanging up')
      await connection.close({ signal: AbortSignal.timeout(2000) }).catch(() => { connection.abort(error) })
      return
    }
    // One direction of the exchange failing on the way (a reset stream) says nothing if the other admitted the peer.
    if (!(error instanceof PeerNotCertifiedError) && this.init.gate.allows(peer)) {
      this.init.logger.debug({ peer, err: describeError(error) }, 'a certificate exchange failed; the peer is admitted by the other')
      return
    }
    const message = error instanceof PeerNotCertifiedError ? error.message : `no device certificate exchanged (${describeError(error)})`
    this.init.gate.reject(peer)
    this.init.onRefused?.(peer, message)
    await connection.close({ signal: AbortSignal.timeout(2000) }).catch(() => { connection.abort(new PeerNotCertifiedError(message)) })
  }
}
