import { EventEmitter } from 'node:events'
import { describeError, signStatusRecord, statusRecordKey, type SignedEnvelope, type StatusRecord } from '../protocol/index.js'
import type { CoordinatorClient, StatusAnswer } from './coordinator-client.js'
import type { Identity } from './identity.js'
import type { AgentStore, LocalTask, OutboxEntry } from './state/store.js'
import type { Logger } from '../protocol/logger.js'
import { RefusalLog } from './refusals.js'

export interface OutboxInit {
  store: AgentStore
  client: Pick<CoordinatorClient, 'postStatus'>
  identity: Identity
  logger: Logger
  /** Where records the coordinator refused are logged. @default a refusal log on `logger` */
  refusals?: RefusalLog
  /** @default 200 */
  batchSize?: number
  /** Delay before retrying after a failed delivery, doubled up to maxBackoffMs. @default 1000 */
  minBackoffMs?: number
  /** @default 30000 */
  maxBackoffMs?: number
  now?: () => number
}

/** Records kept in memory at most while the store cannot write (a full disk); the oldest give way. */
export const MAX_UNSTORED_RECORDS = 1000

export type StatusFields = Omit<StatusRecord, 'type' | 'deviceId' | 'taskId' | 'revision' | 'attempt' | 'seq' | 'at'>

/** A record waiting in the outbox. */
export interface PendingRecord {
  key: string
  envelope: SignedEnvelope
  /** When the record was issued, ms since the epoch. */
  addedAt: number
}

/**
 * Who carries the records when the agent is part of a site (its relay, or
 * its peers' relay over gossip); absent or declining: the agent posts them
 * to the coordinator itself.
 */
export interface StatusRouter {
  /** New records wait: the router delivers them its way, or returns false to leave them to the direct path. */
  route: () => boolean
}

/** A refusal the agent accepts: the record will never be taken as it is, so it leaves the outbox. */
export interface RecordRefusal {
  key: string
  reason: string
  message?: string
}

/**
 * Status records are signed with the device key and kept in a durable outbox
 * until the coordinator acknowledges them (in the answer to this agent's own
 * request, or in a receipt its site's relay passed on); the agent never
 * loses one to a crash or an outage.
 */
export class Outbox extends EventEmitter<{ delivered: [count: number], rejected: [reason: string, message: string], recorded: [] }> {
  private readonly store: AgentStore
  private readonly client: Pick<CoordinatorClient, 'postStatus'>
  private readonly identity: Identity
  private readonly logger: Logger
  private readonly refusals: RefusalLog
  private readonly batchSize: number
  private readonly minBackoffMs: number
  private readonly maxBackoffMs: number
  private readonly now: () => number
  private flushing?: Promise<void>
  private again = false
  private backoffMs: number
  private retryTimer?: NodeJS.Timeout
  private stopped = false
  private router?: StatusRouter
  /** Record key → its outbox id, for acknowledgements that name keys. */
  private index?: Map<string, string>
  /**
   * Records the store could not write (its disk is full): they are sent like
   * the stored ones, so that the failure and its reason still reach the
   * coordinator, but do not outlive the process.
   */
  private readonly unstored = new Map<string, OutboxEntry & { id: string }>()
  private unstoredCounter = 0
  private indexing?: Promise<Map<string, string>>

  constructor (init: OutboxInit) {
    super()
    this.store = init.store
    this.client = init.client
    this.identity = init.identity
    this.logger = init.logger
    this.refusals = init.refusals ?? new RefusalLog({ logger: init.logger })
    this.batchSize = init.batchSize ?? 200
    this.minBackoffMs = init.minBackoffMs ?? 1000
    this.maxBackoffMs = init.maxBackoffMs ?? 30_000
    this.backoffMs = this.minBackoffMs
    this.now = init.now ?? Date.now
  }

  /** Hands delivery to a site router (gossip and relay); `undefined` gives it back to the direct path. */
  setRouter (router: StatusRouter | undefined): void {
    this.router = router
  }

  private async keyIndex (): Promise<Map<string, string>> {
    if (this.index !== undefined) return this.index
    this.indexing ??= (async () => {
      const index = new Map<string, string>()
      for (const entry of await this.store.outboxBatch(Number.MAX_SAFE_INTEGER)) index.set(entry.key, entry.id)
      this.index = index
      return index
    })()
    return await this.indexing
  }

  /**
   * Issues the task's next status record: signs it, saves it with the task's
   * new state in one durable write, and starts delivery.
   */
  async record (task: LocalTask, fields: StatusFields, options: { revision?: number } = {}): Promise<LocalTask> {
    const record: StatusRecord = {
      type: 'meshdeploy.status',
      deviceId: this.identity.deviceId,
      taskId: task.taskId,
      // The task keeps its revision; only the record may name another (an older one it refused).
      revision: options.revision ?? task.revision,
      attempt: Math.max(1, task.attempt),
      seq: task.seq + 1,
      at: this.now(),
      ...fields
    }
    const updated: LocalTask = { ...task, seq: record.seq, state: record.state, updatedAt: record.at }
    if (fields.exitCode !== undefined) updated.exitCode = fields.exitCode
    if (fields.message !== undefined) updated.message = fields.message
    else delete updated.message
    const envelope = signStatusRecord(record, this.identity.key)
    const key = statusRecordKey(record)
    const index = await this.keyIndex()
    const entry: OutboxEntry = { key, envelope, addedAt: record.at }
    let id: string
    try {
      id = await this.store.commitStatus(updated, entry)
    } catch (error) {
      if (this.stopped) throw error
      id = this.keepUnstored(entry, error)
    }
    index.set(key, id)
    this.emit('recorded')
    this.flushSoon()
    return updated
  }

  /** Keeps a record the store could not write in memory, for delivery; returns its id there. */
  private keepUnstored (entry: OutboxEntry, error: unknown): string {
    const id = `unstored:${String(++this.unstoredCounter).padStart(12, '0')}`
    this.unstored.set(id, { id, ...entry })
    if (this.unstored.size > MAX_UNSTORED_RECORDS) {
      const [oldest] = this.unstored.values()
      this.unstored.delete(oldest.id)
      this.index?.delete(oldest.key)
    }
    this.logger.error({ err: describeError(error), key: entry.key, unstored: this.unstored.size }, 'cannot write a status record to the store (is the disk full?); it is kept in memory and sent as it is')
    return id
  }

  /** Records waiting, oldest first: those held in memory, then the outbox's. */
  private async batch (limit: number): Promise<Array<{ id: string } & OutboxEntry>> {
    const out = [...this.unstored.values()].slice(0, limit)
    if (out.length < limit) out.push(...await this.store.outboxBatch(limit - out.length))
    return out
  }

  /** Records waiting, oldest first, at most `limit` of them and about `maxBytes` of envelopes. */
  async pending (limit: number, maxBytes = Number.POSITIVE_INFINITY): Promise<PendingRecord[]> {
    const out: PendingRecord[] = []
    let bytes = 0
    for (const entry of await this.batch(limit)) {
      const size = entry.envelope.payload.length + entry.envelope.signature.length + 100
      if (out.length > 0 && bytes + size > maxBytes) break
      bytes += size
      out.push({ key: entry.key, envelope: entry.envelope, addedAt: entry.addedAt })
    }
    return out
  }

  async size (): Promise<number> {
    return (await this.keyIndex()).size
  }

  /**
   * Drops acknowledged and refused records, by key; keys this outbox does
   * not hold (other devices' records in a receipt) are passed over.
   * Resolves with how many left.
   */
  async acknowledge (acknowledged: Iterable<string>, refused: Iterable<RecordRefusal> = []): Promise<number> {
    const index = await this.keyIndex()
    const ids: string[] = []
    const keys: string[] = []
    for (const key of acknowledged) {
      const id = index.get(key)
      if (id === undefined) continue
      ids.push(id)
      keys.push(key)
    }
    for (const refusal of refused) {
      const id = index.get(refusal.key)
      if (id === undefined) continue
      this.refusals.refuse({ subject: 'status', reason: refusal.reason, message: `the coordinator refused status record ${refusal.key} (${refusal.message ?? refusal.reason}); dropping it`, details: { key: refusal.key } }, 'error')
      this.emit('rejected', refusal.reason, refusal.message ?? refusal.reason)
      ids.push(id)
      keys.push(refusal.key)
    }
    if (ids.length === 0) return 0
    const storedIds = ids.filter(id => !this.unstored.delete(id))
    try {
      await this.store.removeFromOutbox(storedIds)
    } catch (error) {
      // The store cannot write (a full disk): the records stay and go again; the coordinator takes them as duplicates.
      this.logger.warn({ err: describeError(error), records: storedIds.length }, 'cannot drop delivered status records from the store; they will be sent again')
      for (const [at, id] of ids.entries()) if (!storedIds.includes(id)) index.delete(keys[at])
      const dropped = ids.length - storedIds.length
      if (dropped > 0) this.emit('delivered', dropped)
      return dropped
    }
    for (const key of keys) index.delete(key)
    this.emit('delivered', ids.length)
    return ids.length
  }

  /** Applies the coordinator's answer to records this agent sent: what it acknowledged or refused leaves. */
  async applyAnswer (sent: Array<{ key: string }>, answer: StatusAnswer, offset = 0): Promise<number> {
    const refused: RecordRefusal[] = []
    for (const rejection of answer.rejected) {
      const entry = sent[rejection.index - offset]
      if (entry !== undefined) refused.push({ key: entry.key, reason: rejection.reason, message: rejection.message })
    }
    return await this.acknowledge(answer.acknowledged, refused)
  }

  /** Starts a delivery: through the site's router if it takes the records, else directly. */
  flushSoon (): void {
    if (this.stopped) return
    if (this.router?.route() === true) return
    this.flushDirect()
  }

  /** Starts a direct delivery unless one is running; a running one goes round again. */
  flushDirect (): void {
    if (this.stopped) return
    if (this.flushing !== undefined) {
      this.again = true
      return
    }
    clearTimeout(this.retryTimer)
    this.flushing = this.deliver().finally(() => {
      this.flushing = undefined
      if (this.again) {
        this.again = false
        this.flushSoon()
      }
    })
  }

  /** Resolves once the outbox is empty or a direct delivery failed. */
  async flush (): Promise<void> {
    this.flushDirect()
    while (this.flushing !== undefined) await this.flushing
  }

  private async deliver (): Promise<void> {
    while (!this.stopped) {
      const batch = await this.batch(this.batchSize)
      if (batch.length === 0) {
        this.backoffMs = this.minBackoffMs
        return
      }
      let answer
      try {
        answer = await this.client.postStatus(batch.map(entry => entry.envelope))
      } catch (error) {
        this.logger.warn({ err: describeError(error), pending: batch.length, retryInMs: this.backoffMs }, 'status delivery failed; records stay in the outbox')
        this.scheduleRetry()
        return
      }
      const done = await this.applyAnswer(batch, answer)
      this.backoffMs = this.minBackoffMs
      if (done === 0) {
        this.scheduleRetry()
        return
      }
    }
  }

  private scheduleRetry (): void {
    if (this.stopped) return
    clearTimeout(this.retryTimer)
    this.retryTimer = setTimeout(() => { this.flushSoon() }, this.backoffMs)
    this.retryTimer.unref()
    this.backoffMs = Math.min(this.maxBackoffMs, this.backoffMs * 2)
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.retryTimer)
    await this.flushing
  }
}
