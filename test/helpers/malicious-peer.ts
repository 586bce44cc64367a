// A test-only peer that speaks meshdeploy's have and chunk protocols on
// purpose wrongly. It is a real libp2p node (the agent's own node factory,
// limits and gate) whose answers are described at the message level — a
// header, data frames, the length each frame's prefix claims, pauses, how the
// stream ends — and put on the wire by one small encoder (`encodeAnswer`).
// When the wire format changes, the encoder and the behaviours below change;
// the tests that use them do not. Nothing in agent/ or coordinator/ imports
// this file: the product cannot be made to misbehave like this.
import '../../protocol/polyfill.js'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { CODE_P2P, type Multiaddr } from '@multiformats/multiaddr'
import { generateKeyPair, toHex, type Ed25519KeyPair } from '../../protocol/index.js'
import { PeerGate } from '../../agent/p2p/gater.js'
import { createMeshNode, mdnsServiceTagOf } from '../../agent/p2p/node.js'
import * as chunk from '../../agent/protocols/chunk/index.js'
import { FrameReader, asError, encodeVarint, sendBytes } from '../../agent/protocols/frames.js'
import * as have from '../../agent/protocols/have/index.js'
import { presentCertificate, type EnrolledTrust } from './certified-node.js'

/** One frame as it goes on the wire: its bytes, after a length prefix that claims their length — or what the lie says. */
export interface WireFrame {
  bytes: Uint8Array
  /** The length the prefix claims. @default the bytes' length */
  claimedLengthBytes?: number
  /** No prefix at all: the bytes go out as they are (a prefix that never ends, say). */
  raw?: true
}

/** A whole answer to one piece request. */
export interface PieceAnswer {
  /** @default 'ok' */
  status?: chunk.PieceStatus
  /** What the header announces (or, for `rate-limited`, the wait). @default the data's total length */
  announcedBytes?: number
  /** The header's own frame, when it should lie too. @default the encoded header */
  header?: WireFrame
  data?: WireFrame[]
  /** Pause before each data frame. */
  pauseMs?: number
  /** After the last frame: close cleanly, stay open and silent, or reset. @default 'close' */
  end?: 'close' | 'hold' | 'reset'
}

/** How a malicious peer answers: from the request, the honest bytes of the piece and a way to read other chunks. */
export type Behaviour = (request: chunk.PieceRequest, piece: Uint8Array, chunkOf: (index: number) => Uint8Array | undefined) => PieceAnswer

/** The encoder: an answer's frames as the bytes to write, one entry per write. */
export function encodeAnswer (answer: PieceAnswer): { header: Uint8Array, data: Uint8Array[] } {
  const data = answer.data ?? []
  const announced = answer.announcedBytes ?? data.reduce((sum, frame) => sum + frame.bytes.byteLength, 0)
  return {
    header: encodeWireFrame(answer.header ?? { bytes: chunk.encodePieceHeader(answer.status ?? 'ok', announced) }),
    data: data.map(encodeWireFrame)
  }
}

export function encodeWireFrame (frame: WireFrame): Uint8Array {
  if (frame.raw === true) return frame.bytes
  return Buffer.concat([encodeVarint(frame.claimedLengthBytes ?? frame.bytes.byteLength), frame.bytes])
}

const GIB = 1024 ** 3

/** The misbehaviours the bad-input suite uses, each at the message level. */
export const behaviours = {
  honest: (_request, piece) => ({ data: [{ bytes: piece }] }),
  /** The right length, one byte flipped. */
  wrongHash: (_request, piece) => {
    const bytes = Uint8Array.from(piece)
    bytes[bytes.byteLength >> 1] ^= 0x01
    return { data: [{ bytes }] }
  },
  /** Announces the whole piece, sends half of it, and closes cleanly. */
  truncated: (_request, piece) => ({ announcedBytes: piece.byteLength, data: [{ bytes: piece.subarray(0, piece.byteLength >> 1) }] }),
  /** Announces the piece and sends more than that. */
  longer: (_request, piece) => ({ announcedBytes: piece.byteLength, data: [{ bytes: Buffer.concat([piece, new Uint8Array(100)]) }] }),
  /** Announces more than was asked for. */
  announcesMore: (_request, piece) => ({ announcedBytes: piece.byteLength + 1, data: [{ bytes: Buffer.concat([piece, new Uint8Array(1)]) }] }),
  /** A genuine chunk of the package, for another index. */
  otherIndex: (request, piece, chunkOf) => {
    const other = chunkOf(request.index + 1) ?? chunkOf(request.index - 1)!
    return { data: [{ bytes: other.subarray(request.offsetBytes, request.offsetBytes + piece.byteLength) }] }
  },
  /** The header, then sixteen bytes every 100 ms. */
  dribble: (_request, piece) => ({
    announcedBytes: piece.byteLength,
    data: Array.from({ length: Math.ceil(piece.byteLength / 16) }, (_, index) => ({ bytes: piece.subarray(index * 16, index * 16 + 16) })),
    pauseMs: 100
  }),
  /** The header, then a data frame whose prefix claims 4 GiB; the stream stays open. */
  gigabytePrefix: (_request, piece) => ({ announcedBytes: piece.byteLength, data: [{ bytes: new Uint8Array(16), claimedLengthBytes: 4 * GIB }], end: 'hold' }),
  /** A header frame whose own prefix claims 2 GiB. */
  gigabyteHeader: () => ({ header: { bytes: chunk.encodePieceHeader('ok', 1024), claimedLengthBytes: 2 * GIB }, end: 'hold' }),
  /** A prefix whose continuation bit never ends. */
  endlessPrefix: () => ({ header: { bytes: new Uint8Array(32).fill(0x80), raw: true }, end: 'hold' }),
  /** An answer status no version of the protocol has. */
  unknownStatus: () => ({ header: { bytes: Uint8Array.from([0xee, 0, 0, 0, 0]) } })
} satisfies Record<string, Behaviour>

export interface MaliciousPeerInit {
  /** @default a new key */
  key?: Ed25519KeyPair
  /** The organisation's coordinator key id (for the mDNS tag; mDNS is off). */
  coordinatorKeyId: string
  swarmKey?: Uint8Array
  /** Peers its own gate admits. */
  allowedPeerIds: string[]
  /** The device certificate it enrolled with, presented to the agents it connects to; absent: it has none. */
  enrolled?: EnrolledTrust
  /** The package it claims to hold, with the honest bytes of its chunks. */
  pkg?: { id: string, chunks: Uint8Array[] }
  /** @default behaviours.honest */
  behaviour?: Behaviour
}

/** What a flood of piece requests got back: `ok`, a refusal status, or an error name. */
export type FloodOutcome = Record<string, number>

export class MaliciousPeer {
  readonly node: Libp2p
  readonly key: Ed25519KeyPair
  readonly peerId: string
  /** Piece requests received, in order. */
  readonly requests: chunk.PieceRequest[] = []
  /** Peers whose announcement channel to this peer is open (they count it as connected). */
  readonly announcementChannels = new Set<string>()
  private readonly init: MaliciousPeerInit
  private readonly senders = new Map<string, have.HaveSender>()
  private readonly redials = new Map<string, Multiaddr>()
  private readonly stopping = new AbortController()
  private redialCount = 0

  private constructor (node: Libp2p, key: Ed25519KeyPair, init: MaliciousPeerInit) {
    this.node = node
    this.key = key
    this.peerId = node.peerId.toString()
    this.init = init
  }

  static async start (init: MaliciousPeerInit): Promise<MaliciousPeer> {
    const key = init.key ?? generateKeyPair()
    const gate = new PeerGate()
    gate.setAllowed(init.allowedPeerIds)
    const node = await createMeshNode({
      key,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      mdns: false,
      mdnsServiceTag: mdnsServiceTagOf(init.coordinatorKeyId),
      gater: gate.connectionGater(),
      ...(init.swarmKey !== undefined ? { swarmKey: init.swarmKey } : {})
    })
    const peer = new MaliciousPeer(node, key, init)
    if (init.enrolled !== undefined) await presentCertificate(node, gate, init.enrolled)
    await peer.listen()
    return peer
  }

  get publicKeyHex (): string {
    return toHex(this.key.publicKey)
  }

  private async listen (): Promise<void> {
    await this.node.handle(have.PROTOCOL, (stream: Stream, connection: Connection) => {
      const remote = connection.remotePeer.toString()
      this.announcementChannels.add(remote)
      void have.readHaveMessages(stream, message => {
        if (message.type === 'interested' && message.packageId === this.init.pkg?.id) this.announceAll(remote)
      }, { signal: this.stopping.signal }).catch(() => {}).finally(() => { this.announcementChannels.delete(remote) })
    })
    await this.node.handle(chunk.PROTOCOL, (stream: Stream) => { void this.answer(stream) }, { maxInboundStreams: 256 })
    this.node.addEventListener('peer:connect', event => { void this.openChannel(event.detail.toString()) })
    this.node.addEventListener('peer:disconnect', event => {
      const remote = event.detail.toString()
      this.senders.delete(remote)
      const address = this.redials.get(remote)
      // Bounded: a peer that keeps coming back, as an attacker would, but not forever.
      if (address !== undefined && !this.stopping.signal.aborted && this.redialCount++ < 100) {
        setTimeout(() => { void this.dial(address).catch(() => {}) }, 20)
      }
    })
  }

  /** Claims every chunk of its package. */
  private announceAll (remote: string): void {
    const pkg = this.init.pkg
    if (pkg === undefined) return
    const bits = new Uint8Array(have.bitfieldBytes(pkg.chunks.length)).fill(0xff)
    this.senders.get(remote)?.send({ type: 'bitfield', packageId: pkg.id, chunkCount: pkg.chunks.length, bits })
  }

  private async openChannel (remote: string): Promise<void> {
    try {
      const stream = await this.node.dialProtocol(peerIdFromString(remote), have.PROTOCOL, { signal: AbortSignal.timeout(5000) })
      this.senders.set(remote, new have.HaveSender(stream))
      this.announceAll(remote)
    } catch {}
  }

  private async answer (stream: Stream): Promise<void> {
    try {
      const reader = new FrameReader(stream, { maxFrameBytes: chunk.REQUEST_BYTES })
      const frame = await reader.read({ signal: AbortSignal.timeout(10_000) })
      if (frame === null) return
      const request = chunk.decodePieceRequest(frame)
      this.requests.push(request)
      const pkg = this.init.pkg
      const chunkOf = (index: number): Uint8Array | undefined => pkg?.id === request.packageId ? pkg.chunks[index] : undefined
      const whole = chunkOf(request.index)
      if (whole === undefined) {
        await this.write(stream, { status: 'not-cached' })
        return
      }
      const piece = whole.subarray(request.offsetBytes, request.offsetBytes + request.lengthBytes)
      await this.write(stream, (this.init.behaviour ?? behaviours.honest)(request, piece, chunkOf))
    } catch (error) {
      stream.abort(asError(error))
    }
  }

  private async write (stream: Stream, answer: PieceAnswer): Promise<void> {
    const encoded = encodeAnswer(answer)
    const options = { signal: AbortSignal.any([this.stopping.signal, AbortSignal.timeout(60_000)]) }
    await sendBytes(stream, encoded.header, options)
    for (const frame of encoded.data) {
      if (answer.pauseMs !== undefined) await new Promise(resolve => setTimeout(resolve, answer.pauseMs))
      if (stream.status !== 'open') return
      await sendBytes(stream, frame, options)
    }
    const end = answer.end ?? 'close'
    if (end === 'reset') stream.abort(new Error('reset on purpose'))
    else if (end === 'close') await stream.close(options)
    else await new Promise<void>(resolve => {
      stream.addEventListener('close', () => { resolve() }, { once: true })
      options.signal.addEventListener('abort', () => { resolve() }, { once: true })
    })
  }

  /** Dials a peer; with `persistent`, dials again whenever the connection drops. */
  async dial (address: Multiaddr, options: { persistent?: boolean, timeoutMs?: number } = {}): Promise<Connection> {
    const remote = address.getComponents().findLast(component => component.code === CODE_P2P)?.value
    if (options.persistent === true && remote !== undefined) this.redials.set(remote, address)
    try {
      return await this.node.dial(address, { signal: AbortSignal.timeout(options.timeoutMs ?? 5000) })
    } catch (error) {
      throw asError(error)
    }
  }

  /** Stops dialing a peer again. */
  giveUp (remote: string): void {
    this.redials.delete(remote)
  }

  /** Whether this peer's own announcement channel to the remote is open (its claims are on their way). */
  announcingTo (remote: string): boolean {
    return this.senders.has(remote)
  }

  /** Whether a connection to the peer is open. */
  connectedTo (remote: string): boolean {
    return this.node.getConnections(peerIdFromString(remote)).some(connection => connection.status === 'open')
  }

  /** Sends piece requests as fast as answers come, `concurrency` at a time, and counts the outcomes. */
  async flood (remote: string, request: chunk.PieceRequest, options: { count: number, concurrency: number }): Promise<FloodOutcome> {
    const outcome: FloodOutcome = {}
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < options.count) {
        next++
        const key = await this.requestOnce(remote, request)
        outcome[key] = (outcome[key] ?? 0) + 1
      }
    }
    await Promise.all(Array.from({ length: options.concurrency }, worker))
    return outcome
  }

  private async requestOnce (remote: string, request: chunk.PieceRequest): Promise<string> {
    try {
      const connection = this.node.getConnections(peerIdFromString(remote)).find(candidate => candidate.status === 'open')
      if (connection === undefined) return 'not-connected'
      const stream = await connection.newStream(chunk.PROTOCOL, { signal: AbortSignal.timeout(5000), maxOutboundStreams: 1000 })
      await chunk.requestPiece(stream, request, { signal: AbortSignal.timeout(5000) })
      return 'ok'
    } catch (error) {
      const reason = asError(error)
      return reason instanceof chunk.PieceRefusedError ? reason.status : reason.name
    }
  }

  /** Opens `count` streams of a protocol on one connection at once and sends nothing: how many does the remote keep open? */
  async openIdleStreams (remote: string, protocol: string, count: number, settleMs = 500): Promise<{ open: number, refused: number }> {
    const connection = this.node.getConnections(peerIdFromString(remote)).find(candidate => candidate.status === 'open')
    if (connection === undefined) throw new Error(`not connected to ${remote}`)
    const streams = await Promise.all(Array.from({ length: count }, async () => await connection.newStream(protocol, { signal: AbortSignal.timeout(5000), maxOutboundStreams: 10_000 }).catch(() => undefined)))
    await new Promise(resolve => setTimeout(resolve, settleMs))
    const open = streams.filter(stream => stream?.status === 'open').length
    for (const stream of streams) stream?.abort(new Error('done'))
    return { open, refused: count - open }
  }

  /** Writes raw bytes as an announcement to a peer (a malformed message, say). */
  async sendRawAnnouncement (remote: string, bytes: Uint8Array): Promise<void> {
    const stream = await this.node.dialProtocol(peerIdFromString(remote), have.PROTOCOL, { signal: AbortSignal.timeout(5000) })
    await sendBytes(stream, bytes, { signal: AbortSignal.timeout(5000) })
  }

  async stop (): Promise<void> {
    this.stopping.abort()
    this.redials.clear()
    await this.node.stop()
  }
}
