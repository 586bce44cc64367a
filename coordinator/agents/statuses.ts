import { EventEmitter } from 'node:events'
import { availableParallelism } from 'node:os'
import pLimit, { type LimitFunction } from 'p-limit'
import {
  decodeStatusRecord, describeError, fromBase64, fromUtf8, isNewerRecord, publicKeyFromHex, signStatusReceipt,
  statusRecordKey, type SignatureCheck, type SignedEnvelope, type SigningKey, type StatusReceipt, type StatusRecord, type UnverifiedStatusRecord
} from '../../protocol/index.js'
import type { DeviceRecord, DeviceTaskRow, StatusLogEntry, Store, TaskRecord, WriteOperation } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'
import { GroupCommit } from '../store/group-commit.js'
import { checkRecordBounds } from './status-bounds.js'
import { progressOperations } from '../tasks/progress.js'

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
  lookupTask: (taskId: string) => Promise<TaskRecord | undefined>
  /**
   * Whether the scheduler released the task to the device and the device is
   * among its targets now. A device that has a row in the task (it started)
   * may report on it whatever this says.
   */
  isReleasedTo: (task: TaskRecord, device: DeviceRecord) => boolean
  /** A record whose key was stored before with other bytes: two agents sign with one device's key (a cloned identity). */
  onConflict?: (device: DeviceRecord, key: string, viaDeviceId: string) => void
  now?: () => number
  /** How far a record's time may lie from the coordinator's clock. @default MAX_CLOCK_SKEW_MS */
  maxClockSkewMs?: number
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
  /**
   * The counter changes that keep a task's progress in step with a row
   * change, written with the row (the row may gain the ring it is counted
   * under). @default the progress counters without rings
   */
  progressChange?: (previous: DeviceTaskRow | undefined, next: DeviceTaskRow) => { row: DeviceTaskRow, operations: WriteOperation[] }
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
const SIGNED_RECORD_REASONS = new Set([
  'unknown-task', 'unknown-device', 'device-inactive', 'not-assigned', 'state-not-reportable', 'time-out-of-range', 'revision-ahead',
  'seq-out-of-range', 'bytes-out-of-range', 'exit-code-out-of-range', 'inconsistent-record'
])

/** What the checks of a batch need to know about one task, looked up once per batch. */
interface TaskFacts {
  task: TaskRecord
  packageBytes: number
}

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
  /**
   * A device signed two different records under one (task, attempt, seq): one
   * agent never does (a record is written before it is sent, and resent as
   * it was), two agents running with one key and credential do.
   */
  conflicting: [deviceId: string, taskId: string]
}> {
  private readonly store: Store
  private readonly lookupDevice: StatusServiceInit['lookupDevice']
  private readonly lookupTask: StatusServiceInit['lookupTask']
  private readonly isReleasedTo: StatusServiceInit['isReleasedTo']
  private readonly onConflict: NonNullable<StatusServiceInit['onConflict']>
  private readonly now: () => number
  private readonly maxClockSkewMs?: number
  private readonly onRejected: NonNullable<StatusServiceInit['onRejected']>
  private readonly onRelayed: NonNullable<StatusServiceInit['onRelayed']>
  private readonly progressChange: NonNullable<StatusServiceInit['progressChange']>
  private readonly receiptKey?: () => SigningKey
  private readonly verifyLimit: LimitFunction
  private readonly check?: SignatureCheck
  private readonly commits: GroupCommit<CommitJob>

  constructor (init: StatusServiceInit) {
    super()
    this.store = init.store
    this.lookupDevice = init.lookupDevice
    this.lookupTask = init.lookupTask
    this.isReleasedTo = init.isReleasedTo
    this.onConflict = init.onConflict ?? (() => {})
    this.now = init.now ?? Date.now
    if (init.maxClockSkewMs !== undefined) this.maxClockSkewMs = init.maxClockSkewMs
    this.onRejected = init.onRejected ?? (() => {})
    this.onRelayed = init.onRelayed ?? (() => {})
    this.progressChange = init.progressChange ?? ((previous, next) => ({ row: next, operations: progressOperations(previous, next) }))
    if (init.receiptKey !== undefined) this.receiptKey = init.receiptKey
    if (init.check !== undefined) this.check = init.check
    this.verifyLimit = pLimit(Math.max(1, init.verifyConcurrency ?? (init.check !== undefined ? DEFAULT_VERIFY_CONCURRENCY : availableParallelism())))
    this.commits = new GroupCommit<CommitJob>({
      flush: async jobs => { await this.write(jobs) },
      weightOf: job => job.records.length,
      maxWeightPerFlush: Math.max(1, init.maxRecordsPerWrite ?? DEFAULT_MAX_RECORDS_PER_WRITE),
      // A flush counts what it stored into its jobs: a failed one is not tried again job by job.
      isolateFailures: false
    })
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
    const tasks = new Map<string, Promise<TaskFacts | undefined>>()
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
    const taskOf = async (taskId: string): Promise<TaskFacts | undefined> => {
      let facts = tasks.get(taskId)
      if (facts === undefined) {
        facts = this.lookupTask(taskId).then(task => task === undefined ? undefined : { task, packageBytes: packageBytesOf(task) })
        tasks.set(taskId, facts)
      }
      return await facts
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
    // Whether each device already has a row in the task (it started): such a device may go on reporting on it.
    const rowKeys = [...new Set(decoded.map(({ unverified }) => deviceTaskKey(unverified.claimed.taskId, unverified.claimed.deviceId)))]
    const started = new Set<string>()
    for (const [index, row] of (await this.store.collections.deviceTasks.getMany(rowKeys)).entries()) if (row !== undefined) started.add(rowKeys[index])
    const openOne = async ({ index, unverified, logKey }: typeof decoded[number], storedCopy: StatusLogEntry | undefined): Promise<void> => {
      const envelope = envelopes[index]
      let record: StatusRecord
      try {
        const device = await deviceOf(unverified.claimed.deviceId)
        if (device.id !== via.id) heard.set(device.id, device)
        const known = storedCopy !== undefined && storedCopy.envelope.signature === unverified.signature && storedCopy.envelope.payload === unverified.payload
        record = known ? unverified.claimed : await this.verifyLimit(async () => await unverified.verify(publicKeyOf(device), this.check))
        if (storedCopy !== undefined && !known) {
          // The device's key signed two different records under one key: two agents run with one identity.
          this.onConflict(device, statusRecordKey(record), via.id)
        }
        const facts = await taskOf(record.taskId)
        if (facts === undefined) throw new RecordRefusedError('unknown-task', `task ${record.taskId} does not exist`)
        // A device reports only on what it was given: a record never makes a device part of a task.
        if (!started.has(deviceTaskKey(record.taskId, device.id)) && !this.isReleasedTo(facts.task, device)) {
          throw new RecordRefusedError('not-assigned', `device ${device.id} is not assigned task ${record.taskId}`)
        }
        checkRecordBounds(record, {
          nowMs: this.now(),
          taskRevision: facts.task.revision,
          taskCreatedMs: Date.parse(facts.task.createdAt),
          packageBytes: facts.packageBytes,
          ...(this.maxClockSkewMs !== undefined ? { maxClockSkewMs: this.maxClockSkewMs } : {})
        })
      } catch (error) {
        reject(index, error, envelope)
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

  /** Queues verified records for the next durable write (shared with the batches that arrive meanwhile) and resolves once they are stored. */
  private async commit (records: Verified[], via: DeviceRecord): Promise<CommitJob> {
    const job: CommitJob = { records, via, stored: 0, duplicates: 0 }
    await this.commits.commit(job)
    return job
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
    const stored = new Map<string, string>()
    for (const [index, logKey] of logKeys.entries()) {
      const entry = existing[index]
      if (entry !== undefined) stored.set(logKey, entry.envelope.payload)
    }
    const conflicting: StatusRecord[] = []
    const receivedAt = new Date(this.now()).toISOString()
    const operations: WriteOperation[] = []
    const fresh: StatusRecord[] = []
    for (const job of jobs) {
      for (const verified of job.records) {
        // Stored before, or earlier in this write (by this batch or another).
        const storedPayload = stored.get(verified.logKey)
        if (storedPayload !== undefined) {
          job.duplicates++
          if (storedPayload !== verified.envelope.payload) conflicting.push(verified.record)
          continue
        }
        stored.set(verified.logKey, verified.envelope.payload)
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
      // The task's progress counters move with the row, in the same atomic write.
      const { row, operations: counted } = this.progressChange(current, rowOf(record, receivedAt))
      operations.push({ type: 'put', collection: 'deviceTasks', key: rowKey, value: row }, ...counted)
      advanced.push(record)
    }
    await this.store.write(operations)
    if (advanced.length > 0) this.emit('records', advanced)
    for (const record of conflicting) this.emit('conflicting', record.deviceId, record.taskId)
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

/** Bytes of a task's packages as its manifest states them (its own, its dependencies', a replaced package's): the most any device of the task can be fetching. */
function packageBytesOf (task: TaskRecord): number {
  try {
    type Sized = { sizeBytes?: unknown } | undefined
    const manifest = JSON.parse(fromUtf8(fromBase64(task.manifest.payload))) as { package?: Sized, dependencies?: Array<{ package?: Sized }>, supersedes?: Array<{ content?: Sized }> }
    const sizeOf = (pkg: Sized): number => typeof pkg?.sizeBytes === 'number' && Number.isSafeInteger(pkg.sizeBytes) && pkg.sizeBytes >= 0 ? pkg.sizeBytes : 0
    let total = sizeOf(manifest.package)
    for (const dependency of Array.isArray(manifest.dependencies) ? manifest.dependencies : []) total += sizeOf(dependency?.package)
    for (const superseded of Array.isArray(manifest.supersedes) ? manifest.supersedes : []) total += sizeOf(superseded?.content)
    return total
  } catch {
    return 0
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
  if (record.windowAt !== undefined) row.windowAt = record.windowAt
  return row
}
