import { EventEmitter } from 'node:events'
import { TopicValidatorResult, type GossipSub, type GossipsubOpts, type Message } from '@libp2p/gossipsub'
import type { Libp2p, PeerId } from '@libp2p/interface'
import {
  describeError, keyIdOf, toBase64, openStatusReceipt, openStatusRecord, trustKeys, type KeyResolver, type SignedEnvelope, type StatusReceipt
} from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import * as status from '../protocols/status/index.js'
import { RefusalLog } from '../refusals.js'
import type { StatusMessage } from '../protocols/status/index.js'

export interface StatusGossipEvents {
  /** A peer's own records, each verified against its key. */
  records: [peer: string, records: SignedEnvelope[]]
  /** A coordinator receipt passed on by a relay, verified against the pinned coordinator key. */
  receipt: [peer: string, receipt: StatusReceipt]
  heartbeat: [peer: string, reachesCoordinator: boolean, relay: string | undefined]
  /** The peer disconnected. */
  'peer-left': [peer: string]
  /** A message that failed validation: dropped, not passed on, and its sender's gossip score goes down. */
  refused: [peer: string, reason: string]
}

/**
 * What the status logic needs of the gossip. The libp2p implementation
 * below is the only code that touches gossipsub; tests of the logic use a
 * stub.
 */
export interface StatusGossipNetwork extends EventEmitter<StatusGossipEvents> {
  readonly selfId: string
  readonly topic: string
  /** Moves to another topic (the device moved to another site). */
  setTopic: (topic: string) => void
  /** Publishes to the site; resolves with how many peers it was sent to (0: nobody listens). */
  publish: (message: StatusMessage) => Promise<number>
  /** Peers subscribed to the topic. */
  topicPeers: () => string[]
}

export interface StatusGossipOptionsInit {
  topic: string
  /** Whether a peer is an enrolled device of the organisation (the connection gate's allow-list). */
  isAllowed: (peer: string) => boolean
}

/**
 * gossipsub's settings for the status topic, all explicit: signed messages
 * only, bounded messages and RPCs, publishing allowed when the agent is alone
 * in its site, and peer scores that graylist a peer sending messages that do
 * not verify, or a peer that is not an enrolled device. A status topic is
 * quiet, so silence is never penalised, and many devices behind one address
 * (loopback, a NAT) are normal.
 */
export function statusGossipOptions (init: StatusGossipOptionsInit): Partial<GossipsubOpts> {
  return {
    globalSignaturePolicy: 'StrictSign',
    // Copies of a message already verified are known by their signature and dropped before a second
    // check: with flood publishing a site's agents receive each message several times, and checking
    // every copy's signature cost more than all the rest of the status path together. The cache only
    // learns a signature once its message verified, so a forged copy cannot shadow the real one.
    fastMsgIdFn: message => message.signature !== undefined ? toBase64(message.signature) : '',
    emitSelf: false,
    allowPublishToZeroTopicPeers: true,
    ignoreDuplicatePublishError: true,
    floodPublish: true,
    heartbeatInterval: status.GOSSIP_HEARTBEAT_INTERVAL_MS,
    D: status.GOSSIP_MESH_DEGREE,
    Dlo: status.GOSSIP_MESH_DEGREE_LOW,
    Dhi: status.GOSSIP_MESH_DEGREE_HIGH,
    Dout: status.GOSSIP_MESH_OUTBOUND_DEGREE,
    Dlazy: status.GOSSIP_LAZY_DEGREE,
    maxInboundDataLength: status.MAX_RPC_BYTES,
    maxOutboundBufferSize: status.MAX_OUTBOUND_BUFFER_BYTES,
    maxInboundStreams: 2,
    maxOutboundStreams: 2,
    decodeRpcLimits: {
      maxSubscriptions: 16,
      maxMessages: 256,
      maxIhaveMessageIDs: 1000,
      maxIwantMessageIDs: 1000,
      maxControlMessages: 256,
      maxIdontwantMessageIDs: 512,
      maxPeerInfos: 16
    },
    doPX: false,
    scoreParams: {
      topics: {
        [init.topic]: {
          topicWeight: 1,
          timeInMeshWeight: 0.01,
          timeInMeshQuantum: 1000,
          timeInMeshCap: 100,
          firstMessageDeliveriesWeight: 0.1,
          firstMessageDeliveriesDecay: 0.9,
          firstMessageDeliveriesCap: 50,
          meshMessageDeliveriesWeight: 0,
          meshMessageDeliveriesDecay: 0.5,
          meshMessageDeliveriesCap: 100,
          meshMessageDeliveriesThreshold: 1,
          meshMessageDeliveriesWindow: 10,
          meshMessageDeliveriesActivation: 5000,
          meshFailurePenaltyWeight: 0,
          meshFailurePenaltyDecay: 0.5,
          // One message that does not verify puts the sender below the graylist threshold for a while.
          invalidMessageDeliveriesWeight: -100,
          invalidMessageDeliveriesDecay: 0.99
        }
      },
      topicScoreCap: 10,
      appSpecificScore: peer => init.isAllowed(peer) ? 0 : -1000,
      appSpecificWeight: 1,
      IPColocationFactorWeight: 0,
      IPColocationFactorThreshold: 1,
      behaviourPenaltyWeight: -1,
      behaviourPenaltyThreshold: 6,
      behaviourPenaltyDecay: 0.9,
      decayInterval: 1000,
      decayToZero: 0.01,
      retainScore: 10 * 60 * 1000
    },
    scoreThresholds: {
      gossipThreshold: -10,
      publishThreshold: -50,
      graylistThreshold: -80,
      acceptPXThreshold: 100,
      opportunisticGraftThreshold: 5
    }
  }
}

export interface Libp2pStatusGossipInit {
  node: Libp2p
  pubsub: GossipSub
  topic: string
  logger: Logger
  isAllowed: (peer: string) => boolean
  /** The device id a site peer's records must name, when the coordinator's peer list says. */
  deviceOf?: (peer: string) => string | undefined
  /** The coordinator keys a receipt may be signed with (the pinned key, which follows rotations). */
  coordinatorKeys: () => KeyResolver
  /** Where refused messages are logged. @default a refusal log on `logger` */
  refusals?: RefusalLog
}

/** Why a message was refused (`reason` of the refusal) or passed over. */
export type StatusMessageRefusal =
  'unsigned-message' | 'peer-not-allowed' | 'malformed-message' | 'record-of-another-device' | 'record-does-not-verify' | 'receipt-does-not-verify' | 'receipt-key-unknown'

type Checked = { kind: 'accept', message: StatusMessage, receipt?: StatusReceipt } | { kind: 'reject' | 'ignore', reason: StatusMessageRefusal, detail: string }

/** The status topic over gossipsub: every message validated before it is delivered or passed on. */
export class Libp2pStatusGossip extends EventEmitter<StatusGossipEvents> implements StatusGossipNetwork {
  readonly selfId: string
  private currentTopic: string
  private readonly node: Libp2p
  private readonly pubsub: GossipSub
  private readonly logger: Logger
  private readonly refusals: RefusalLog
  private readonly init: Libp2pStatusGossipInit
  private readonly validator = (peer: PeerId, message: Message): TopicValidatorResult => this.validate(message)
  /** What validation decoded (and the receipt it opened), by the message's bytes: delivery neither parses nor verifies again. */
  private readonly accepted = new WeakMap<Uint8Array, { message: StatusMessage, receipt?: StatusReceipt }>()
  private readonly onMessage = (event: CustomEvent<Message>): void => { this.deliver(event.detail) }
  private readonly onPeerDisconnect = (event: CustomEvent<PeerId>): void => { this.emit('peer-left', event.detail.toString()) }

  constructor (init: Libp2pStatusGossipInit) {
    super()
    this.init = init
    this.node = init.node
    this.pubsub = init.pubsub
    this.logger = init.logger
    this.refusals = init.refusals ?? new RefusalLog({ logger: init.logger })
    this.selfId = init.node.peerId.toString()
    this.currentTopic = init.topic
  }

  get topic (): string {
    return this.currentTopic
  }

  start (): void {
    this.pubsub.addEventListener('message', this.onMessage)
    this.node.addEventListener('peer:disconnect', this.onPeerDisconnect)
    this.join(this.currentTopic)
  }

  stop (): void {
    this.pubsub.removeEventListener('message', this.onMessage)
    this.node.removeEventListener('peer:disconnect', this.onPeerDisconnect)
    this.leave(this.currentTopic)
  }

  private join (topic: string): void {
    this.pubsub.topicValidators.set(topic, this.validator)
    this.pubsub.subscribe(topic)
  }

  private leave (topic: string): void {
    this.pubsub.unsubscribe(topic)
    this.pubsub.topicValidators.delete(topic)
  }

  setTopic (topic: string): void {
    if (topic === this.currentTopic) return
    this.leave(this.currentTopic)
    this.currentTopic = topic
    this.join(topic)
    this.logger.info({ topic }, 'status gossip moved to another topic')
  }

  topicPeers (): string[] {
    return this.pubsub.getSubscribers(this.currentTopic).map(peer => peer.toString())
  }

  async publish (message: StatusMessage): Promise<number> {
    const bytes = status.encodeStatusMessage(message)
    const { recipients } = await this.pubsub.publish(this.currentTopic, bytes)
    return recipients.length
  }

  /** Decodes and verifies a message as received: its sender is an enrolled device, records are its own, receipts are the coordinator's. */
  private check (message: Message): Checked {
    if (message.type !== 'signed') return { kind: 'reject', reason: 'unsigned-message', detail: 'the message is not signed' }
    const peer = message.from.toString()
    if (!this.init.isAllowed(peer)) return { kind: 'reject', reason: 'peer-not-allowed', detail: 'the sender is not an enrolled device' }
    let decoded: StatusMessage
    try {
      decoded = status.decodeStatusMessage(message.data)
    } catch (error) {
      return { kind: 'reject', reason: 'malformed-message', detail: describeError(error) }
    }
    if (decoded.type === 'records') {
      if (message.key.type !== 'Ed25519') return { kind: 'reject', reason: 'record-does-not-verify', detail: 'the sender\'s key is not ed25519' }
      const keys = trustKeys(message.key.raw)
      const device = this.init.deviceOf?.(peer)
      for (const envelope of decoded.records) {
        try {
          const { record } = openStatusRecord(envelope, keys)
          if (device !== undefined && record.deviceId !== device) return { kind: 'reject', reason: 'record-of-another-device', detail: `a record names device ${record.deviceId}, the sender is ${device}` }
        } catch (error) {
          return { kind: 'reject', reason: 'record-does-not-verify', detail: `a record does not verify against the sender's key: ${describeError(error)}` }
        }
      }
    } else if (decoded.type === 'receipt') {
      try {
        return { kind: 'accept', message: decoded, receipt: openStatusReceipt(decoded.receipt, this.init.coordinatorKeys()) }
      } catch (error) {
        const ownKey = message.key.type === 'Ed25519' && decoded.receipt.keyId === keyIdOf(message.key.raw)
        // A coordinator key this agent has not followed yet says nothing against the relay: dropped, not punished.
        if ((error as Error).name === 'UnknownKeyError' && !ownKey) return { kind: 'ignore', reason: 'receipt-key-unknown', detail: `a receipt signed by a key this agent does not hold: ${describeError(error)}` }
        return { kind: 'reject', reason: 'receipt-does-not-verify', detail: `a receipt does not verify against the coordinator key: ${describeError(error)}` }
      }
    }
    return { kind: 'accept', message: decoded }
  }

  private validate (message: Message): TopicValidatorResult {
    const checked = this.check(message)
    if (checked.kind === 'accept') {
      this.accepted.set(message.data, checked.receipt !== undefined ? { message: checked.message, receipt: checked.receipt } : { message: checked.message })
      return TopicValidatorResult.Accept
    }
    const peer = message.type === 'signed' ? message.from.toString() : 'unknown'
    this.refusals.refuse({ subject: 'status', reason: checked.reason, peer, message: `a status gossip message ${checked.kind === 'reject' ? 'refused' : 'passed over'}: ${checked.detail}` })
    this.emit('refused', peer, `${checked.reason}: ${checked.detail}`)
    return checked.kind === 'reject' ? TopicValidatorResult.Reject : TopicValidatorResult.Ignore
  }

  /** A validated message: verified once already, decoded again (cheap) and passed on as a typed event. */
  private deliver (message: Message): void {
    if (message.topic !== this.currentTopic || message.type !== 'signed') return
    const peer = message.from.toString()
    const accepted = this.accepted.get(message.data)
    let decoded: StatusMessage
    try {
      decoded = accepted?.message ?? status.decodeStatusMessage(message.data)
    } catch {
      return
    }
    switch (decoded.type) {
      case 'records':
        this.emit('records', peer, decoded.records)
        break
      case 'receipt': {
        let receipt: StatusReceipt
        try {
          receipt = accepted?.receipt ?? openStatusReceipt(decoded.receipt, this.init.coordinatorKeys())
        } catch {
          return
        }
        this.emit('receipt', peer, receipt)
        break
      }
      case 'heartbeat':
        this.emit('heartbeat', peer, decoded.reachesCoordinator, decoded.relay)
        break
    }
  }
}
