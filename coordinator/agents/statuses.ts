import { EventEmitter } from 'node:events'
import { availableParallelism } from 'node:os'
import pLimit, { type LimitFunction } from 'p-limit'
import {
  decodeStatusRecord, describeError, fromBase64, fromUtf8, isNewerRecord, publicKeyFromHex, signStatusReceipt,
  statusRecordKey, type SignatureCheck, type SignedEnvelope, type SigningKey, type StatusReceipt, type StatusRecord, type UnverifiedStatusRecord
} from '../../protocol/index.js'
import type { DeviceRecord, DeviceTaskRow, StatusLogEntry, Store, WriteOperation } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'

export interface StatusRejection {
  index: number
  reason: string
  message: string
}

export interface IngestResult {
  /** Keys (`device/task/attempt/seq`) of records stored now or before: the sender may drop them. */
  acknowledged: string[]
  /** Records that were refused and will never be accepted as they are. */
  rejected: StatusRejection[]
  /** How many of the acknowledged records were already stored. */
  duplicates: number
  /** The coordinator's signed receipt of the batch, when the sender asked for one (a relay, to pass on to its site). */
  receipt?: SignedEnvelope
}

/** Zero-pads a number so that keys sort numerically. */
function pad (value: number): string {
  return value.toString().padStart(12, '0')
}

export function statusLogKey (record: Pick<StatusRecord, 'taskId' | 'deviceId' | 'revision' | 'attempt' | 'seq'>): string {
  return `${record.taskId}!${record.deviceId}!${pad(record.revision)}!${pad(record.attempt)}!${pad(record.seq)}`
}

/** Records a batch decodes and looks up at once. */
export const DEFAULT_BATCH_CONCURRENCY = 64
/**
 * Signatures waiting for their check at once, over every batch. With a
 * verifier pool, many at once let its workers take them in large batches;
 * with libuv's pool (no `check` given), one per core keeps the cores busy
 * without more threads than cores fighting over them, and leaves the pool
 * free for the store's reads and writes.
 */
export const DEFAULT_VERIFY_CONCURRENCY = 4096
/** Records stored in one durable write at most; more wait for the next. */
export const DEFAULT_MAX_RECORDS_PER_WRITE = 20_000

export interface StatusServiceInit {
  store: Store
  lookupDevice: (deviceId: string) => Promise<DeviceRecord | undefined>
  taskExists: (taskId: string) => Promise<boolean>
  now?: () => number
  /** A refused record, with the device that sent it and what it claims (unverified: for the log). */
  onRejected?: (rejection: StatusRejection & { viaDeviceId: string, claimedDeviceId?: string, claimedKey?: string }) => void
  /** Devices whose records arrived through another device (a site relay): they were heard from. */
  onRelayed?: (devices: DeviceRecord[]) => void
  /** The key that signs receipts (the coordinator's current key). */
  receiptKey?: () => SigningKey
  /** How signatures are checked, such as a VerifierPool's `check`. @default one at a time in libuv's pool */
  check?: SignatureCheck
  /** Signatures checked at once, over every batch. @default DEFAULT_VERIFY_CONCURRENCY with `check`, one per core without */
  verifyConcurrency?: number
  /** @default DEFAULT_MAX_RECORDS_PER_WRITE */
  maxRecordsPerWrite?: number
}

/** A record refused for a reason of its own, named by `reason`. */
class RecordRefusedError extends Error {
  readonly reason: string
  constructor (reason: string, message: string) {
    super(message)
    this.name = 'RecordRefusedError'
    this.reason = reason
  }
}

/** Reasons that concern the record as its device signed it: a receipt names them, and the device drops the record. */
const SIGNED_RECORD_REASONS = new Set(['unknown-task', 'unknown-device', 'device-inactive'])

interface Verified {
  record: StatusRecord
  envelope: SignedEnvelope
  logKey: string
}

/** One request's verified records, waiting for a durable write. */
interface CommitJob {
  records: Verified[]
  via: DeviceRecord
  stored: number
  duplicates: number
  resolve: () => void
  reject: (error: unknown) => void
}

/**
 * Takes in device-signed status records: verifies each against its device's
 * key (off the main thread, many at once), drops duplicates by (device,
 * task, attempt, seq), stores the record and the device's latest row
 * durably, and only then acknowledges. Concurrent batches share durable
 * writes (group commit): while one write is flushed to disk, the batches
 * that arrive meanwhile gather for the next. One write at a time reads,
 * compares and writes the rows, which keeps them exact whatever the order
 * records arrive in.
 */
export class StatusService extends EventEmitter<{
  /** Devices' new states: for each device and task a write moved forward, its newest record (a late, older record moves nothing). */
  records: [records: StatusRecord[]]
  ingested: [stored: number, duplicates: number, rejected: number]
}> {
  private readonly store: Store
  private readonly lookupDevice: StatusServiceInit['lookupDevice']
  private readonly taskExists: StatusServiceInit['taskExists']
  private readonly now: () => number
  private readonly onRejected: NonNullable<StatusServiceInit['onRejected']>
  private readonly onRelayed: NonNullable<StatusServiceInit['onRelayed']>
  private readonly receiptKey?: () => SigningKey
  private readonly verifyLimit: LimitFunction
  private readonly check?: SignatureCheck
  private readonly maxRecordsPerWrite: number
  private readonly queue: CommitJob[] = []
  private writing?: Promise<void>

  constructor (init: StatusServiceInit) {
    super()
    this.store = init.store
    this.lookupDevice = init.lookupDevice
    this.taskExists = init.taskExists
    this.now = init.now ?? Date.now
    this.onRejected = init.onRejected ?? (() => {})
    this.onRelayed = init.onRelayed ?? (() => {})
    if (init.receiptKey !== undefined) this.receiptKey = init.receiptKey
    if (init.check !== undefined) this.check = init.check
    this.verifyLimit = pLimit(Math.max(1, init.verifyConcurrency ?? (init.check !== undefined ? DEFAULT_VERIFY_CONCURRENCY : availableParallelism())))
    this.maxRecordsPerWrite = Math.max(1, init.maxRecordsPerWrite ?? DEFAULT_MAX_RECORDS_PER_WRITE)
  }

  async ingest (envelopes: unknown[], via: DeviceRecord, options: { receipt?: boolean } = {}): Promise<IngestResult> {
    // Looked up once per batch: a relay's batch carries a few devices' records many times over.
    const devices = new Map<string, Promise<DeviceRecord | undefined>>([[via.id, Promise.resolve(via)]])
    const publicKeys = new Map<string, Uint8Array>()
    const publicKeyOf = (device: DeviceRecord): Uint8Array => {
      let key = publicKeys.get(device.id)
      if (key === undefined) {
        key = publicKeyFromHex(device.publicKey)
        publicKeys.set(device.id, key)
      }
      return key
    }
    const tasks = new Map<string, Promise<boolean>>()
    const heard = new Map<string, DeviceRecord>()
    const deviceOf = async (deviceId: string): Promise<DeviceRecord> => {
      let lookup = devices.get(deviceId)
      if (lookup === undefined) {
        lookup = this.lookupDevice(deviceId)
        devices.set(deviceId, lookup)
      }
      const device = await lookup
      if (device === undefined) throw new RecordRefusedError('unknown-device', `device ${deviceId} is not enrolled`)
      if (device.status !== 'active') throw new RecordRefusedError('device-inactive', `device ${deviceId} is ${device.status}`)
      return device
    }
    const taskExists = async (taskId: string): Promise<boolean> => {
      let exists = tasks.get(taskId)
      if (exists === undefined) {
        exists = this.taskExists(taskId)
        tasks.set(taskId, exists)
      }
      return await exists
    }
    type Slot = Verified | StatusRejection & { key?: string, claimed?: { key: string, deviceId: string } }
    const slots: Slot[] = new Array(envelopes.length)
    const reject = (index: number, error: unknown, envelope: unknown): void => {
      const reason = (error as { reason?: string }).reason ?? 'invalid'
      const claimed = claimedKeyOf(envelope)
      slots[index] = { index, reason, message: describeError(error), ...(claimed !== undefined ? { claimed } : {}), ...(claimed !== undefined && SIGNED_RECORD_REASONS.has(reason) ? { key: claimed.key } : {}) }
    }
    // Decoded once; what the records claim picks the keys and finds copies stored before.
    const decoded: Array<{ index: number, unverified: UnverifiedStatusRecord, logKey: string }> = []
    for (const [index, envelope] of envelopes.entries()) {
      try {
        const unverified = decodeStatusRecord(envelope)
        decoded.push({ index, unverified, logKey: statusLogKey(unverified.claimed) })
      } catch (error) {
        reject(index, error, envelope)
      }
    }
    // A record whose exact bytes are stored was verified when it was stored: a sender's repeat costs no second verification.
    const stored = await this.store.collections.statusLog.getMany(decoded.map(({ logKey }) => logKey))
    const openOne = async ({ index, unverified, logKey }: typeof decoded[number], storedCopy: StatusLogEntry | undefined): Promise<void> => {
      const envelope = envelopes[index]
      let record: StatusRecord
      try {
        const device = await deviceOf(unverified.claimed.deviceId)
        if (device.id !== via.id) heard.set(device.id, device)
        const known = storedCopy !== undefined && storedCopy.envelope.signature === unverified.signature && storedCopy.envelope.payload === unverified.payload
        record = known ? unverified.claimed : await this.verifyLimit(async () => await unverified.verify(publicKeyOf(device), this.check))
      } catch (error) {
        reject(index, error, envelope)
        return
      }
      if (!await taskExists(record.taskId)) {
        slots[index] = { index, reason: 'unknown-task', message: `task ${record.taskId} does not exist`, key: statusRecordKey(record), claimed: { key: statusRecordKey(record), deviceId: record.deviceId } }
        return
      }
      slots[index] = { record, envelope: envelope as SignedEnvelope, logKey }
    }
    for (let start = 0; start < decoded.length; start += DEFAULT_BATCH_CONCURRENCY) {
      const slice: Array<Promise<void>> = []
      for (let at = start; at < Math.min(decoded.length, start + DEFAULT_BATCH_CONCURRENCY); at++) slice.push(openOne(decoded[at], stored[at]))
      await Promise.all(slice)
    }
    const verified: Verified[] = []
    const rejected: StatusRejection[] = []
    const receiptRejections: StatusReceipt['rejected'] = []
    for (const slot of slots) {
      if ('record' in slot) {
        verified.push(slot)
        continue
      }
      const { key, claimed, ...rejection } = slot
      rejected.push(rejection)
      if (key !== undefined && key.length <= 240) receiptRejections.push({ key, reason: rejection.reason })
      this.onRejected({ ...rejection, viaDeviceId: via.id, ...(claimed !== undefined ? { claimedDeviceId: claimed.deviceId, claimedKey: claimed.key } : {}) })
    }
    let duplicates = 0
    if (verified.length > 0) {
      const job = await this.commit(verified, via)
      duplicates = job.duplicates
      this.emit('ingested', job.stored, job.duplicates, rejected.length)
    } else {
      this.emit('ingested', 0, 0, rejected.length)
    }
    if (heard.size > 0) this.onRelayed([...heard.values()])
    const acknowledged = verified.map(({ record }) => statusRecordKey(record))
    const result: IngestResult = { acknowledged, rejected, duplicates }
    if (options.receipt === true && this.receiptKey !== undefined) {
      result.receipt = signStatusReceipt({ type: 'meshdeploy.status-receipt', relayDeviceId: via.id, acknowledged, rejected: receiptRejections, at: this.now() }, this.receiptKey())
    }
    return result
  }

  /** Queues verified records for the next durable write and resolves once they are stored. */
  private async commit (records: Verified[], via: DeviceRecord): Promise<CommitJob> {
    let job!: CommitJob
    const written = new Promise<void>((resolve, reject) => {
      job = { records, via, stored: 0, duplicates: 0, resolve, reject }
    })
    this.queue.push(job)
    this.writing ??= this.writeAll()
    await written
    return job
  }

  private async writeAll (): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const jobs: CommitJob[] = []
        let count = 0
        while (this.queue.length > 0 && (jobs.length === 0 || count + this.queue[0].records.length <= this.maxRecordsPerWrite)) {
          const job = this.queue.shift()!
          jobs.push(job)
          count += job.records.length
        }
        try {
          await this.write(jobs)
          for (const job of jobs) job.resolve()
        } catch (error) {
          for (const job of jobs) job.reject(error)
        }
      }
    } finally {
      this.writing = undefined
    }
  }

  /** One durable write for several batches: new log entries and the rows they move forward. */
  private async write (jobs: CommitJob[]): Promise<void> {
    const logKeys: string[] = []
    const first = new Map<string, Verified>()
    for (const job of jobs) {
      for (const verified of job.records) {
        if (first.has(verified.logKey)) continue
        first.set(verified.logKey, verified)
        logKeys.push(verified.logKey)
      }
    }
    const existing = await this.store.collections.statusLog.getMany(logKeys)
    const stored = new Set<string>()
    for (const [index, logKey] of logKeys.entries()) if (existing[index] !== undefined) stored.add(logKey)
    const receivedAt = new Date(this.now()).toISOString()
    const operations: WriteOperation[] = []
    const fresh: StatusRecord[] = []
    for (const job of jobs) {
      for (const verified of job.records) {
        // Stored before, or earlier in this write (by this batch or another).
        if (stored.has(verified.logKey)) {
          job.duplicates++
          continue
        }
        stored.add(verified.logKey)
        job.stored++
        const entry: StatusLogEntry = { key: statusRecordKey(verified.record), receivedAt, viaDeviceId: job.via.id, envelope: verified.envelope }
        operations.push({ type: 'put', collection: 'statusLog', key: verified.logKey, value: entry })
        fresh.push(verified.record)
      }
    }
    const newest = new Map<string, StatusRecord>()
    for (const record of fresh) {
      const rowKey = deviceTaskKey(record.taskId, record.deviceId)
      const current = newest.get(rowKey)
      if (current === undefined || isNewerRecord(record, current)) newest.set(rowKey, record)
    }
    const rowKeys = [...newest.keys()]
    const rows = await this.store.collections.deviceTasks.getMany(rowKeys)
    const advanced: StatusRecord[] = []
    for (const [index, rowKey] of rowKeys.entries()) {
      const record = newest.get(rowKey)!
      const current = rows[index]
      if (current !== undefined && !isNewerRecord(record, current)) continue
      operations.push({ type: 'put', collection: 'deviceTasks', key: rowKey, value: rowOf(record, receivedAt) })
      advanced.push(record)
    }
    await this.store.write(operations)
    if (advanced.length > 0) this.emit('records', advanced)
  }

  /** A device's records for a task, oldest first. */
  async history (taskId: string, deviceId: string): Promise<StatusRecord[]> {
    const records: StatusRecord[] = []
    for await (const entry of this.store.collections.statusLog.values({ prefix: `${taskId}!${deviceId}!` })) {
      records.push(JSON.parse(fromUtf8(fromBase64(entry.envelope.payload))) as StatusRecord)
    }
    return records
  }
}

/** What a refused record claims to be, read without trusting it: for the log, and for a receipt's refusal that concerns the device it names. */
function claimedKeyOf (envelope: unknown): { key: string, deviceId: string } | undefined {
  try {
    const payload = (envelope as { payload?: unknown }).payload
    if (typeof payload !== 'string' || payload.length > 64 * 1024) return undefined
    const claimed = JSON.parse(fromUtf8(fromBase64(payload))) as Partial<StatusRecord>
    if (typeof claimed.deviceId !== 'string' || typeof claimed.taskId !== 'string' || !Number.isInteger(claimed.attempt) || !Number.isInteger(claimed.seq)) return undefined
    return { key: statusRecordKey(claimed as StatusRecord).slice(0, 300), deviceId: claimed.deviceId.slice(0, 100) }
  } catch {
    return undefined
  }
}

/** A device's row in a task as a status record sets it. */
export function rowOf (record: StatusRecord, receivedAt: string): DeviceTaskRow {
  const row: DeviceTaskRow = {
    taskId: record.taskId,
    deviceId: record.deviceId,
    state: record.state,
    revision: record.revision,
    attempt: record.attempt,
    seq: record.seq,
    bytesTotal: record.bytesTotal,
    bytesDone: record.bytesDone,
    bytesFromPeers: record.bytesFromPeers,
    bytesFromOrigin: record.bytesFromOrigin,
    reportedAt: new Date(record.at).toISOString(),
    updatedAt: receivedAt
  }
  if (record.exitCode !== undefined) row.exitCode = record.exitCode
  if (record.message !== undefined) row.message = record.message
  if (record.retryAt !== undefined) row.retryAt = record.retryAt
  if (record.final !== undefined) row.final = record.final
  return row
}
