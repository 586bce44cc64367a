import { EventEmitter } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { StatusAnswer } from '../../agent/coordinator-client.js'
import type { Identity } from '../../agent/identity.js'
import { Outbox } from '../../agent/outbox.js'
import type { StatusGossipEvents, StatusGossipNetwork } from '../../agent/p2p/status-gossip.js'
import type { StatusMessage } from '../../agent/protocols/status/index.js'
import { Reachability } from '../../agent/reachability.js'
import { SiteStatus, type SiteStatusInit } from '../../agent/status/site-status.js'
import type { StatusPoster } from '../../agent/status/relay.js'
import { AgentStore, type LocalTask } from '../../agent/state/store.js'
import {
  generateKeyPair, openStatusReceipt, openStatusRecord, signStatusReceipt, statusRecordKey, trustKeys, type Ed25519KeyPair, type SignedEnvelope
} from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'

/** An in-memory gossip topic: what one node publishes reaches the others that joined, asynchronously and in order. */
export class StubGossipHub {
  readonly nodes = new Map<string, StubGossip>()
  readonly coordinatorKey: Ed25519KeyPair
  constructor (coordinatorKey: Ed25519KeyPair) {
    this.coordinatorKey = coordinatorKey
  }

  join (selfId: string): StubGossip {
    const node = new StubGossip(this, selfId)
    this.nodes.set(selfId, node)
    return node
  }

  /** The node is gone (its process died): the others see it disconnect. */
  leave (selfId: string): void {
    this.nodes.delete(selfId)
    for (const other of this.nodes.values()) setImmediate(() => { other.emit('peer-left', selfId) })
  }
}

export class StubGossip extends EventEmitter<StatusGossipEvents> implements StatusGossipNetwork {
  readonly selfId: string
  topic = 'meshdeploy/status/1/test/branch'
  readonly published: StatusMessage[] = []
  /** Messages this node sends arrive nowhere while true (its link is cut). */
  muted = false
  constructor (private readonly hub: StubGossipHub, selfId: string) {
    super()
    this.selfId = selfId
  }

  setTopic (topic: string): void {
    this.topic = topic
  }

  topicPeers (): string[] {
    return [...this.hub.nodes.keys()].filter(id => id !== this.selfId)
  }

  async publish (message: StatusMessage): Promise<number> {
    this.published.push(message)
    if (this.muted) return 0
    const others = [...this.hub.nodes.values()].filter(node => node !== this && node.topic === this.topic)
    for (const node of others) {
      setImmediate(() => {
        if (!this.hub.nodes.has(this.selfId) || !this.hub.nodes.has(node.selfId)) return
        switch (message.type) {
          case 'records': node.emit('records', this.selfId, message.records); break
          case 'heartbeat': node.emit('heartbeat', this.selfId, message.reachesCoordinator, message.relay); break
          case 'receipt': node.emit('receipt', this.selfId, openStatusReceipt(message.receipt, trustKeys(this.hub.coordinatorKey.publicKey))); break
        }
      })
    }
    return others.length
  }
}

/** The coordinator's status route, in memory: stores each record once by key, signs receipts, counts requests. */
export class StubCoordinator {
  readonly stored = new Map<string, SignedEnvelope>()
  readonly requests: Array<{ records: number, receipt: boolean, via: string }> = []
  readonly deviceKeys = new Map<string, Uint8Array>()
  constructor (readonly key: Ed25519KeyPair) {}

  poster (via: string, reachable: () => boolean, reachability: Reachability): StatusPoster & { postStatus: (records: SignedEnvelope[], options?: { receipt?: boolean }) => Promise<StatusAnswer> } {
    return {
      postStatus: async (records, options = {}) => {
        await new Promise(resolve => setImmediate(resolve))
        if (!reachable()) {
          reachability.failed()
          throw new Error('the coordinator cannot be reached')
        }
        reachability.succeeded()
        this.requests.push({ records: records.length, receipt: options.receipt === true, via })
        const acknowledged: string[] = []
        const rejected: StatusAnswer['rejected'] = []
        let duplicates = 0
        for (const [index, envelope] of records.entries()) {
          try {
            const claimed = JSON.parse(Buffer.from(envelope.payload, 'base64').toString('utf8'))
            const { record } = openStatusRecord(envelope, trustKeys(this.deviceKeys.get(claimed.deviceId)!))
            const key = statusRecordKey(record)
            if (this.stored.has(key)) duplicates++
            else this.stored.set(key, envelope)
            acknowledged.push(key)
          } catch (error) {
            rejected.push({ index, reason: 'bad-signature', message: (error as Error).message })
          }
        }
        const answer: StatusAnswer = { acknowledged, rejected, duplicates }
        if (options.receipt === true) answer.receipt = signStatusReceipt({ type: 'meshdeploy.status-receipt', relayDeviceId: via, acknowledged, rejected: [], at: Date.now() }, this.key)
        return answer
      }
    }
  }
}

export interface StubAgent {
  id: string
  store: AgentStore
  outbox: Outbox
  gossip: StubGossip
  reachability: Reachability
  site: SiteStatus
  /** Whether this agent's requests reach the coordinator. */
  reachable: boolean
  task: LocalTask
  /** Issues the next status record of its task. */
  record: (state?: 'downloading' | 'succeeded') => Promise<void>
  stop: () => Promise<void>
}

/** An agent's status path over the stub hub and coordinator: a real outbox in level, a real SiteStatus and Relay. */
export async function stubAgent (hub: StubGossipHub, coordinator: StubCoordinator, id: string, tuning: Partial<SiteStatusInit> = {}): Promise<StubAgent> {
  const folder = await mkdtemp(join(tmpdir(), 'md-status-stub-'))
  const store = await AgentStore.open(join(folder, 'db'), folder)
  const key = generateKeyPair()
  coordinator.deviceKeys.set(id, key.publicKey)
  const reachability = new Reachability()
  const holder: { agent?: StubAgent } = {}
  const poster = coordinator.poster(id, () => holder.agent?.reachable ?? true, reachability)
  const outbox = new Outbox({ store, client: poster, identity: { deviceId: id, key } as unknown as Identity, logger: silentLogger(), minBackoffMs: 50, maxBackoffMs: 200 })
  const gossip = hub.join(id)
  const site = new SiteStatus({
    gossip,
    outbox,
    poster,
    reachability,
    logger: silentLogger(),
    heartbeatIntervalMs: 50,
    livenessMs: 250,
    republishIntervalMs: 150,
    directFallbackMs: 60_000,
    relay: { batchIntervalMs: 30, minBackoffMs: 50, maxBackoffMs: 200 },
    ...tuning
  })
  const agent: StubAgent = {
    id,
    store,
    outbox,
    gossip,
    reachability,
    site,
    reachable: true,
    task: { taskId: 'task-1', revision: 1, state: 'pending', attempt: 1, failures: 0, seq: 0, bytesFromPeers: 0, bytesFromOrigin: 0, updatedAt: 0 },
    record: async (state = 'downloading') => {
      agent.task = await outbox.record(agent.task, { state, bytesTotal: 10, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0 })
    },
    stop: async () => {
      await site.stop()
      await outbox.stop()
      await store.close()
      await rm(folder, { recursive: true, force: true })
    }
  }
  holder.agent = agent
  // As the assignments loop would: the first exchange reaches the coordinator.
  reachability.succeeded()
  site.start()
  return agent
}

export async function until (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}
