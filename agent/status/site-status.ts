import { EventEmitter } from 'node:events'
import { describeError, MIB, type SignedEnvelope } from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import type { Outbox, StatusRouter } from '../outbox.js'
import type { StatusGossipNetwork } from '../p2p/status-gossip.js'
import { DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_LIVENESS_MS, recordMessages, type StatusMessage } from '../protocols/status/index.js'
import type { Reachability } from '../reachability.js'
import { RelayElection } from './election.js'
import { Relay, type RelayInit, type StatusPoster } from './relay.js'

/** A record offered to the relay is offered again after this long without a receipt. */
export const DEFAULT_REPUBLISH_INTERVAL_MS = 5000
/** A record offered to relays for this long without a receipt goes up directly, if this agent reaches the coordinator. */
export const DEFAULT_DIRECT_FALLBACK_MS = 30_000
/** Records offered per round. */
const MAX_OFFERED_PER_ROUND = 2000

export interface SiteStatusInit {
  gossip: StatusGossipNetwork
  outbox: Pick<Outbox, 'pending' | 'acknowledge' | 'applyAnswer' | 'flushDirect' | 'flushSoon' | 'setRouter'>
  poster: StatusPoster
  reachability: Pick<Reachability, 'reachable' | 'on' | 'off'>
  logger: Logger
  now?: () => number
  /** @default DEFAULT_HEARTBEAT_INTERVAL_MS */
  heartbeatIntervalMs?: number
  /** @default DEFAULT_LIVENESS_MS */
  livenessMs?: number
  /** Relay candidates that heartbeat besides the relay. @default DEFAULT_RELAY_STANDBYS */
  relayStandbys?: number
  /** @default DEFAULT_REPUBLISH_INTERVAL_MS */
  republishIntervalMs?: number
  /** @default DEFAULT_DIRECT_FALLBACK_MS */
  directFallbackMs?: number
  /** Tuning of the relay role. */
  relay?: Pick<RelayInit, 'batchIntervalMs' | 'maxBatchRecords' | 'maxBatchBytes' | 'maxPendingRecords' | 'requestTimeoutMs' | 'minBackoffMs' | 'maxBackoffMs'>
}

export interface SiteStatusEvents {
  /** The site's relay changed (undefined: none, every agent reports directly). */
  relay: [peer: string | undefined, self: boolean]
}

/**
 * The agent's part in its site's status path. Every agent says on the
 * site's topic that it is there and whether it reaches the coordinator; the
 * relay is elected from that. With no relay the agent posts its records
 * itself. With another relay it publishes them on the topic (again after a
 * while until a receipt names them, and at once to a new relay), and falls
 * back to posting them itself if no receipt comes for long. As the relay it
 * sends its site's records up in batches and passes the receipts back down.
 */
export class SiteStatus extends EventEmitter<SiteStatusEvents> implements StatusRouter {
  private readonly init: SiteStatusInit
  private readonly gossip: StatusGossipNetwork
  private readonly now: () => number
  private readonly heartbeatIntervalMs: number
  private readonly republishIntervalMs: number
  private readonly directFallbackMs: number
  private election: RelayElection
  readonly relay: Relay
  private currentRelay?: string
  /** Records offered to relays: when first, and when last. */
  private readonly offered = new Map<string, { firstAt: number, lastAt: number }>()
  private offeredTo?: string
  private heartbeatTimer?: NodeJS.Timeout
  private publishTimer?: NodeJS.Timeout
  private publishing?: Promise<void>
  private publishAgain = false
  private stopped = true
  private readonly onRecords = (peer: string, records: SignedEnvelope[]): void => {
    if (this.relay.active) this.relay.add(records)
  }

  private readonly onReceipt = (_peer: string, receipt: { acknowledged: string[], rejected: Array<{ key: string, reason: string }> }): void => {
    this.relay.forget([...receipt.acknowledged, ...receipt.rejected.map(rejection => rejection.key)])
    for (const key of receipt.acknowledged) this.offered.delete(key)
    this.init.outbox.acknowledge(receipt.acknowledged, receipt.rejected).catch(error => {
      this.init.logger.error({ err: describeError(error) }, 'cannot drop acknowledged records from the outbox')
    })
  }

  private readonly onHeartbeat = (peer: string, reachesCoordinator: boolean): void => {
    this.election.heard(peer, reachesCoordinator)
    this.evaluate()
  }

  private readonly onPeerLeft = (peer: string): void => {
    this.election.left(peer)
    this.evaluate()
  }

  private readonly onReachability = (reachable: boolean): void => {
    this.election.setSelfReaches(reachable)
    void this.heartbeat()
    this.evaluate()
  }

  constructor (init: SiteStatusInit) {
    super()
    this.init = init
    this.gossip = init.gossip
    this.now = init.now ?? Date.now
    this.heartbeatIntervalMs = init.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS
    this.republishIntervalMs = init.republishIntervalMs ?? DEFAULT_REPUBLISH_INTERVAL_MS
    this.directFallbackMs = init.directFallbackMs ?? DEFAULT_DIRECT_FALLBACK_MS
    this.election = this.newElection()
    this.relay = new Relay({
      ...init.relay,
      poster: init.poster,
      outbox: init.outbox,
      logger: init.logger,
      publishReceipt: async receipt => { await this.gossip.publish({ type: 'receipt', receipt }) }
    })
  }

  private newElection (): RelayElection {
    const election = new RelayElection({
      self: this.gossip.selfId,
      salt: this.gossip.topic,
      now: this.now,
      ...(this.init.livenessMs !== undefined ? { livenessMs: this.init.livenessMs } : {}),
      ...(this.init.relayStandbys !== undefined ? { standbys: this.init.relayStandbys } : {})
    })
    election.setSelfReaches(this.init.reachability.reachable)
    return election
  }

  /** The relay the agent currently follows (itself included), or undefined. */
  get relayPeer (): string | undefined {
    return this.currentRelay
  }

  get isRelay (): boolean {
    return this.currentRelay === this.gossip.selfId
  }

  start (): void {
    if (!this.stopped) return
    this.stopped = false
    this.gossip.on('records', this.onRecords)
    this.gossip.on('receipt', this.onReceipt)
    this.gossip.on('heartbeat', this.onHeartbeat)
    this.gossip.on('peer-left', this.onPeerLeft)
    this.init.reachability.on('changed', this.onReachability)
    this.election.setSelfReaches(this.init.reachability.reachable)
    this.init.outbox.setRouter(this)
    this.tick()
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.heartbeatTimer)
    clearTimeout(this.publishTimer)
    this.gossip.off('records', this.onRecords)
    this.gossip.off('receipt', this.onReceipt)
    this.gossip.off('heartbeat', this.onHeartbeat)
    this.gossip.off('peer-left', this.onPeerLeft)
    this.init.reachability.off('changed', this.onReachability)
    this.init.outbox.setRouter(undefined)
    await this.relay.stop()
    await this.publishing
  }

  /** The device moved to another site: another topic, another election. */
  setTopic (topic: string): void {
    if (topic === this.gossip.topic) return
    this.gossip.setTopic(topic)
    this.election = this.newElection()
    this.offered.clear()
    this.evaluate()
  }

  private tick (): void {
    if (this.stopped) return
    // Only the relay and its standbys heartbeat: the others would make every agent's traffic grow with the site.
    if (this.election.shouldHeartbeat()) void this.heartbeat()
    this.evaluate()
    this.heartbeatTimer = setTimeout(() => { this.tick() }, this.heartbeatIntervalMs)
    this.heartbeatTimer.unref()
  }

  private async heartbeat (): Promise<void> {
    if (this.stopped) return
    const relay = this.election.relay()
    const message: StatusMessage = { type: 'heartbeat', reachesCoordinator: this.election.reachesCoordinator, ...(relay !== undefined ? { relay } : {}) }
    await this.gossip.publish(message).catch(error => {
      this.init.logger.debug({ err: describeError(error) }, 'cannot publish a status heartbeat')
    })
  }

  /** Follows the election: takes the relay role up or hands it over, and sends waiting records the new way. */
  private evaluate (): void {
    if (this.stopped) return
    const relay = this.election.relay()
    if (relay === this.currentRelay) return
    const self = this.gossip.selfId
    const was = this.currentRelay
    this.currentRelay = relay
    if (relay === self) {
      this.init.logger.info({ previous: was }, 'this agent is now its site\'s status relay')
      this.relay.start()
    } else {
      if (was === self) void this.relay.stop()
      this.init.logger.info({ relay: relay ?? null, previous: was ?? null }, relay === undefined ? 'no agent of the site reaches the coordinator as relay; records go up directly' : 'the site\'s status relay changed')
    }
    this.emit('relay', relay, relay === self)
    this.init.outbox.flushSoon()
  }

  /** The outbox has records: where they go depends on the relay. */
  route (): boolean {
    if (this.stopped) return false
    const relay = this.currentRelay
    if (relay === undefined) return false
    if (relay === this.gossip.selfId) {
      this.relay.soon()
      return true
    }
    this.publishSoon()
    return true
  }

  private publishSoon (delayMs = 0): void {
    if (this.stopped) return
    if (this.publishing !== undefined) {
      this.publishAgain = true
      return
    }
    clearTimeout(this.publishTimer)
    this.publishTimer = setTimeout(() => {
      this.publishing = this.offer().catch(error => {
        this.init.logger.warn({ err: describeError(error) }, 'cannot offer status records to the site\'s relay')
      }).finally(() => {
        this.publishing = undefined
        if (this.publishAgain) {
          this.publishAgain = false
          this.publishSoon()
        }
      })
    }, delayMs)
    this.publishTimer.unref()
  }

  /** Publishes the records due (never offered, offered long enough ago, or offered to another relay) and plans the next round. */
  private async offer (): Promise<void> {
    const relay = this.currentRelay
    if (this.stopped || relay === undefined || relay === this.gossip.selfId) return
    if (relay !== this.offeredTo) {
      // A new relay has heard nothing yet.
      for (const offered of this.offered.values()) offered.lastAt = Number.NEGATIVE_INFINITY
      this.offeredTo = relay
    }
    const entries = await this.init.outbox.pending(MAX_OFFERED_PER_ROUND, 8 * MIB)
    const now = this.now()
    const live = new Set(entries.map(entry => entry.key))
    for (const key of this.offered.keys()) if (!live.has(key)) this.offered.delete(key)
    const due = entries.filter(entry => now - (this.offered.get(entry.key)?.lastAt ?? Number.NEGATIVE_INFINITY) >= this.republishIntervalMs)
    let sent = 0
    for (const message of recordMessages(due.map(entry => entry.envelope))) {
      const recipients = await this.gossip.publish(message).catch(error => {
        this.init.logger.debug({ err: describeError(error) }, 'cannot publish status records')
        return 0
      })
      // Nobody listens yet (the relay's subscription has not arrived): the records wait for the next round.
      if (recipients === 0) break
      sent += message.records.length
    }
    for (const entry of due.slice(0, sent)) {
      const offered = this.offered.get(entry.key)
      if (offered === undefined) this.offered.set(entry.key, { firstAt: now, lastAt: now })
      else offered.lastAt = now
    }
    if (entries.length === 0) return
    // A relay that takes records but sends no receipt for them (it lost the coordinator without saying so, or misbehaves): go around it.
    if (this.init.reachability.reachable && entries.some(entry => (this.offered.get(entry.key)?.firstAt ?? now) <= now - this.directFallbackMs)) {
      this.init.logger.warn({ relay, waiting: entries.length }, 'records offered to the site\'s relay were not acknowledged in time; sending them directly')
      for (const entry of entries) this.offered.delete(entry.key)
      this.init.outbox.flushDirect()
      return
    }
    this.publishSoon(sent < due.length ? this.heartbeatIntervalMs : this.republishIntervalMs)
  }
}
