import { EventEmitter } from 'node:events'
import { describeError, fromBase64, fromUtf8, KIB, statusRecordKey, type SignedEnvelope, type StatusRecord } from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import type { StatusAnswer } from '../coordinator-client.js'
import type { Outbox } from '../outbox.js'

/** How long records gather before the relay sends them up. */
export const DEFAULT_RELAY_BATCH_INTERVAL_MS = 2000
/** Records per request; the coordinator takes up to 1000, and its receipt must fit one gossip message. */
export const DEFAULT_RELAY_MAX_BATCH_RECORDS = 500
export const DEFAULT_RELAY_MAX_BATCH_BYTES = 512 * KIB
/** Peers' records held for the next batches; more are left to their senders, who publish them again. */
export const DEFAULT_RELAY_MAX_PENDING_RECORDS = 20_000
export const DEFAULT_RELAY_REQUEST_TIMEOUT_MS = 10_000
export const DEFAULT_RELAY_MIN_BACKOFF_MS = 1000
export const DEFAULT_RELAY_MAX_BACKOFF_MS = 30_000

export interface StatusPoster {
  postStatus: (records: SignedEnvelope[], options: { receipt?: boolean, timeoutMs?: number, signal?: AbortSignal }) => Promise<StatusAnswer>
}

export interface RelayInit {
  poster: StatusPoster
  /** This agent's own records. */
  outbox: Pick<Outbox, 'pending' | 'applyAnswer'>
  /** Passes the coordinator's receipt on to the site. */
  publishReceipt: (receipt: SignedEnvelope) => Promise<void>
  logger: Logger
  /** @default DEFAULT_RELAY_BATCH_INTERVAL_MS */
  batchIntervalMs?: number
  /** @default DEFAULT_RELAY_MAX_BATCH_RECORDS */
  maxBatchRecords?: number
  /** @default DEFAULT_RELAY_MAX_BATCH_BYTES */
  maxBatchBytes?: number
  /** @default DEFAULT_RELAY_MAX_PENDING_RECORDS */
  maxPendingRecords?: number
  /** @default DEFAULT_RELAY_REQUEST_TIMEOUT_MS */
  requestTimeoutMs?: number
  /** @default DEFAULT_RELAY_MIN_BACKOFF_MS */
  minBackoffMs?: number
  /** @default DEFAULT_RELAY_MAX_BACKOFF_MS */
  maxBackoffMs?: number
}

export interface RelayEvents {
  /** A batch went up: how many records, how many of them were peers'. */
  sent: [records: number, fromPeers: number]
  failed: [error: unknown]
}

/** The key of a record that was verified already (by the gossip): read for bookkeeping only. */
function keyOf (envelope: SignedEnvelope): string {
  return statusRecordKey(JSON.parse(fromUtf8(fromBase64(envelope.payload))) as StatusRecord)
}

function sizeOf (envelope: SignedEnvelope): number {
  return envelope.payload.length + envelope.signature.length + 100
}

/**
 * The site relay's work: it gathers the records its peers publish (already
 * verified by the gossip), adds its own, and sends them up in batches, at
 * most one request at a time. The coordinator's answer settles its own
 * outbox; its signed receipt goes back down to the site. Peers' records live
 * in memory only: their senders keep them durably until a receipt names
 * them, and publish them again to a new relay.
 */
export class Relay extends EventEmitter<RelayEvents> {
  private readonly init: RelayInit
  private readonly pending = new Map<string, SignedEnvelope>()
  private readonly batchIntervalMs: number
  private readonly maxBatchRecords: number
  private readonly maxBatchBytes: number
  private readonly maxPending: number
  private readonly minBackoffMs: number
  private readonly maxBackoffMs: number
  private backoffMs: number
  private timer?: NodeJS.Timeout
  private running?: Promise<void>
  private again = false
  private againDelayMs?: number
  private stopped = true
  private dropped = 0

  constructor (init: RelayInit) {
    super()
    this.init = init
    this.batchIntervalMs = init.batchIntervalMs ?? DEFAULT_RELAY_BATCH_INTERVAL_MS
    this.maxBatchRecords = init.maxBatchRecords ?? DEFAULT_RELAY_MAX_BATCH_RECORDS
    this.maxBatchBytes = init.maxBatchBytes ?? DEFAULT_RELAY_MAX_BATCH_BYTES
    this.maxPending = init.maxPendingRecords ?? DEFAULT_RELAY_MAX_PENDING_RECORDS
    this.minBackoffMs = init.minBackoffMs ?? DEFAULT_RELAY_MIN_BACKOFF_MS
    this.maxBackoffMs = init.maxBackoffMs ?? DEFAULT_RELAY_MAX_BACKOFF_MS
    this.backoffMs = this.minBackoffMs
  }

  get active (): boolean {
    return !this.stopped
  }

  /** Peers' records waiting to go up. */
  get waiting (): number {
    return this.pending.size
  }

  start (): void {
    if (!this.stopped) return
    this.stopped = false
    this.backoffMs = this.minBackoffMs
    this.soon()
  }

  /** Stops relaying (another agent took over): what peers sent is forgotten, as they publish it again to the new relay. */
  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    this.timer = undefined
    this.pending.clear()
    await this.running
  }

  /** Peers' records, verified by the gossip. */
  add (records: SignedEnvelope[]): void {
    if (this.stopped) return
    for (const envelope of records) {
      let key: string
      try {
        key = keyOf(envelope)
      } catch {
        continue
      }
      if (this.pending.has(key)) continue
      if (this.pending.size >= this.maxPending) {
        if (this.dropped++ === 0) this.init.logger.warn({ waiting: this.pending.size }, 'the relay holds as many peers\' records as it may; the others wait with their senders')
        continue
      }
      this.pending.set(key, envelope)
    }
    this.soon()
  }

  /** Records another relay's receipt settled: nothing to send for them. */
  forget (keys: Iterable<string>): void {
    for (const key of keys) this.pending.delete(key)
  }

  /** Sends a batch after the batch interval (records gather meanwhile); a batch under way goes round again. */
  soon (delayMs = this.batchIntervalMs): void {
    if (this.stopped) return
    if (this.running !== undefined) {
      this.again = true
      return
    }
    if (this.timer !== undefined) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.running = this.round().finally(() => {
        this.running = undefined
        if (this.again) {
          const againDelayMs = this.againDelayMs
          this.again = false
          this.againDelayMs = undefined
          this.soon(againDelayMs)
        }
      })
    }, delayMs)
    this.timer.unref()
  }

  private async round (): Promise<void> {
    if (this.stopped) return
    // Own records take at most half a batch while peers' wait, so neither starves the other.
    const ownLimit = this.pending.size > 0 ? Math.ceil(this.maxBatchRecords / 2) : this.maxBatchRecords
    const own = await this.init.outbox.pending(ownLimit, this.maxBatchBytes / 2)
    const others: Array<[string, SignedEnvelope]> = []
    let bytes = own.reduce((sum, entry) => sum + sizeOf(entry.envelope), 0)
    for (const entry of this.pending) {
      if (own.length + others.length >= this.maxBatchRecords || bytes + sizeOf(entry[1]) > this.maxBatchBytes) break
      others.push(entry)
      bytes += sizeOf(entry[1])
    }
    if (own.length + others.length === 0) return
    let answer: StatusAnswer
    try {
      answer = await this.init.poster.postStatus([...own.map(entry => entry.envelope), ...others.map(([, envelope]) => envelope)], {
        receipt: true,
        timeoutMs: this.init.requestTimeoutMs ?? DEFAULT_RELAY_REQUEST_TIMEOUT_MS
      })
    } catch (error) {
      this.init.logger.warn({ err: describeError(error), own: own.length, fromPeers: others.length, retryInMs: this.backoffMs }, 'the relay could not send its batch; the records wait')
      this.emit('failed', error)
      const retryInMs = this.backoffMs
      this.backoffMs = Math.min(this.maxBackoffMs, this.backoffMs * 2)
      if (!this.stopped) this.soonAfterFailure(retryInMs)
      return
    }
    this.backoffMs = this.minBackoffMs
    await this.init.outbox.applyAnswer(own, answer)
    const acknowledged = new Set(answer.acknowledged)
    const refused = new Set(answer.rejected.map(rejection => rejection.index - own.length))
    for (const [index, [key]] of others.entries()) {
      // Refused records are refused for good as they are: their senders learn it from the receipt, or publish them again.
      if (acknowledged.has(key) || refused.has(index)) this.pending.delete(key)
    }
    if (others.length > 0 && answer.receipt !== undefined) {
      await this.init.publishReceipt(answer.receipt).catch(error => {
        this.init.logger.warn({ err: describeError(error) }, 'cannot pass the coordinator\'s receipt on to the site; its agents will publish their records again')
      })
    }
    this.emit('sent', own.length + others.length, others.length)
    // A full batch: the next one goes at once.
    if (own.length + others.length >= this.maxBatchRecords) {
      this.again = true
      this.againDelayMs = 0
    } else if (this.pending.size > 0) {
      this.again = true
    }
  }

  private soonAfterFailure (delayMs: number): void {
    this.again = false
    clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.soon(0)
    }, delayMs)
    this.timer.unref()
  }
}
