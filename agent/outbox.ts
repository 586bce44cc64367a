import { EventEmitter } from 'node:events'
import { describeError, signStatusRecord, statusRecordKey, type StatusRecord } from '../protocol/index.js'
import type { CoordinatorClient } from './coordinator-client.js'
import type { Identity } from './identity.js'
import type { AgentStore, LocalTask } from './state/store.js'
import type { Logger } from '../protocol/logger.js'
import { RefusalLog } from './refusals.js'

export interface OutboxInit {
  store: AgentStore
  client: CoordinatorClient
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

export type StatusFields = Omit<StatusRecord, 'type' | 'deviceId' | 'taskId' | 'revision' | 'attempt' | 'seq' | 'at'>

/**
 * Status records are signed with the device key and kept in a durable outbox
 * until the coordinator acknowledges them; the agent never loses one to a
 * crash or an outage.
 */
export class Outbox extends EventEmitter<{ delivered: [count: number], rejected: [reason: string, message: string] }> {
  private readonly store: AgentStore
  private readonly client: CoordinatorClient
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

  /**
   * Issues the task's next status record: signs it, saves it with the task's
   * new state in one durable write, and starts delivery.
   */
  async record (task: LocalTask, fields: StatusFields): Promise<LocalTask> {
    const record: StatusRecord = {
      type: 'meshdeploy.status',
      deviceId: this.identity.deviceId,
      taskId: task.taskId,
      revision: task.revision,
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
    await this.store.commitStatus(updated, { key: statusRecordKey(record), envelope, addedAt: record.at })
    this.flushSoon()
    return updated
  }

  /** Starts a delivery unless one is running; a running one goes round again. */
  flushSoon (): void {
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

  /** Resolves once the outbox is empty or delivery failed. */
  async flush (): Promise<void> {
    this.flushSoon()
    while (this.flushing !== undefined) await this.flushing
  }

  private async deliver (): Promise<void> {
    while (!this.stopped) {
      const batch = await this.store.outboxBatch(this.batchSize)
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
      const acknowledged = new Set(answer.acknowledged)
      const done = batch.filter(entry => acknowledged.has(entry.key)).map(entry => entry.id)
      for (const rejection of answer.rejected) {
        const entry = batch[rejection.index]
        if (entry === undefined) continue
        this.refusals.refuse({ subject: 'status', reason: rejection.reason, message: `the coordinator refused status record ${entry.key} (${rejection.message}); dropping it`, details: { key: entry.key } }, 'error')
        this.emit('rejected', rejection.reason, rejection.message)
        done.push(entry.id)
      }
      await this.store.removeFromOutbox(done)
      this.backoffMs = this.minBackoffMs
      if (done.length > 0) this.emit('delivered', done.length)
      if (done.length === 0) {
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
