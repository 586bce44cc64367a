import { EventEmitter } from 'node:events'
import pLimit from 'p-limit'
import {
  MalformedError, describeError, fromBase64, fromUtf8, isNewerRecord, openStatusRecord, publicKeyFromHex, signedEnvelopeSchema,
  statusRecordKey, trustKeys, type SignedEnvelope, type StatusRecord
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
}

/** Zero-pads a number so that keys sort numerically. */
function pad (value: number): string {
  return value.toString().padStart(12, '0')
}

export function statusLogKey (record: Pick<StatusRecord, 'taskId' | 'deviceId' | 'revision' | 'attempt' | 'seq'>): string {
  return `${record.taskId}!${record.deviceId}!${pad(record.revision)}!${pad(record.attempt)}!${pad(record.seq)}`
}

export interface StatusServiceInit {
  store: Store
  lookupDevice: (deviceId: string) => Promise<DeviceRecord | undefined>
  taskExists: (taskId: string) => Promise<boolean>
  now?: () => number
  onRejected?: (rejection: StatusRejection & { viaDeviceId: string }) => void
}

/** Untrusted peek at the device id, only to know which key to verify with. */
function claimedDeviceId (envelope: unknown): string | undefined {
  const parsed = signedEnvelopeSchema.safeParse(envelope)
  if (!parsed.success) return undefined
  try {
    const decoded = JSON.parse(fromUtf8(fromBase64(parsed.data.payload))) as { deviceId?: unknown }
    return typeof decoded.deviceId === 'string' ? decoded.deviceId : undefined
  } catch {
    return undefined
  }
}

/**
 * Takes in device-signed status records: verifies each against its device's
 * key, drops duplicates by (device, task, attempt, seq), stores the record and
 * the device's latest row durably, and only then acknowledges.
 */
export class StatusService extends EventEmitter<{ records: [records: StatusRecord[]], ingested: [stored: number, duplicates: number, rejected: number] }> {
  private readonly store: Store
  private readonly lookupDevice: StatusServiceInit['lookupDevice']
  private readonly taskExists: StatusServiceInit['taskExists']
  private readonly now: () => number
  private readonly onRejected: NonNullable<StatusServiceInit['onRejected']>
  /** Rows are read, compared and written back: one batch at a time keeps that exact. */
  private readonly serial = pLimit(1)

  constructor (init: StatusServiceInit) {
    super()
    this.store = init.store
    this.lookupDevice = init.lookupDevice
    this.taskExists = init.taskExists
    this.now = init.now ?? Date.now
    this.onRejected = init.onRejected ?? (() => {})
  }

  async ingest (envelopes: unknown[], via: DeviceRecord): Promise<IngestResult> {
    const verified: Array<{ record: StatusRecord, envelope: SignedEnvelope }> = []
    const rejected: StatusRejection[] = []
    const reject = (index: number, reason: string, message: string): void => {
      const rejection = { index, reason, message }
      rejected.push(rejection)
      this.onRejected({ ...rejection, viaDeviceId: via.id })
    }
    for (const [index, envelope] of envelopes.entries()) {
      const deviceId = claimedDeviceId(envelope)
      if (deviceId === undefined) {
        reject(index, 'malformed', 'not a status record envelope')
        continue
      }
      const device = deviceId === via.id ? via : await this.lookupDevice(deviceId)
      if (device === undefined) {
        reject(index, 'unknown-device', `device ${deviceId} is not enrolled`)
        continue
      }
      if (device.status !== 'active') {
        reject(index, 'device-inactive', `device ${deviceId} is ${device.status}`)
        continue
      }
      try {
        const { record } = openStatusRecord(envelope, trustKeys(publicKeyFromHex(device.publicKey)))
        if (record.deviceId !== device.id) throw new MalformedError('the record names another device')
        if (!await this.taskExists(record.taskId)) {
          reject(index, 'unknown-task', `task ${record.taskId} does not exist`)
          continue
        }
        verified.push({ record, envelope: envelope as SignedEnvelope })
      } catch (error) {
        const reason = (error as { reason?: string }).reason ?? 'invalid'
        reject(index, reason, describeError(error))
      }
    }
    return await this.serial(async () => await this.store_(verified, rejected, via))
  }

  private async store_ (verified: Array<{ record: StatusRecord, envelope: SignedEnvelope }>, rejected: StatusRejection[], via: DeviceRecord): Promise<IngestResult> {
    const logKeys = verified.map(({ record }) => statusLogKey(record))
    const existing = await this.store.collections.statusLog.getMany(logKeys)
    const receivedAt = new Date(this.now()).toISOString()
    const operations: WriteOperation[] = []
    const fresh: StatusRecord[] = []
    const rows = new Map<string, DeviceTaskRow | undefined>()
    const seen = new Set<string>()
    let duplicates = 0
    for (const [index, { record, envelope }] of verified.entries()) {
      const logKey = logKeys[index]
      if (existing[index] !== undefined || seen.has(logKey)) {
        duplicates++
        continue
      }
      seen.add(logKey)
      const entry: StatusLogEntry = { key: statusRecordKey(record), receivedAt, viaDeviceId: via.id, envelope }
      operations.push({ type: 'put', collection: 'statusLog', key: logKey, value: entry })
      fresh.push(record)
      const rowKey = deviceTaskKey(record.taskId, record.deviceId)
      if (!rows.has(rowKey)) rows.set(rowKey, await this.store.collections.deviceTasks.get(rowKey))
      const current = rows.get(rowKey)
      if (current === undefined || isNewerRecord(record, current)) rows.set(rowKey, rowOf(record, receivedAt))
    }
    for (const [rowKey, row] of rows) {
      if (row !== undefined) operations.push({ type: 'put', collection: 'deviceTasks', key: rowKey, value: row })
    }
    await this.store.write(operations)
    if (fresh.length > 0) this.emit('records', fresh)
    this.emit('ingested', fresh.length, duplicates, rejected.length)
    return { acknowledged: verified.map(({ record }) => statusRecordKey(record)), rejected, duplicates }
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
