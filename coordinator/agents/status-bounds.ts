import { MAX_CLOCK_SKEW_MS, type StatusRecord } from '../../protocol/index.js'

/**
 * A record's sequence number may not exceed this: an agent issues one record
 * per state change and one a second while downloading, so a billion is
 * decades of records for one task. A larger one could only be meant to make
 * the device's later records look older than it.
 */
export const MAX_STATUS_SEQ = 1_000_000_000
/** Bytes a device may say it received for a task: what a thousand attempts (the attempt ceiling) could fetch at most. */
export const MAX_RECEIVED_COPIES = 1000
/** How far a retry time (or the next maintenance window) may lie after the record's time: beyond a task's longest validity nothing happens. */
export const MAX_RETRY_AHEAD_MS = 400 * 24 * 3600 * 1000
/** Exit codes are 32-bit: signed on POSIX, unsigned DWORDs on Windows. */
const MIN_EXIT_CODE = -(2 ** 31)
const MAX_EXIT_CODE = 2 ** 32 - 1

/** States only the coordinator sets; a device never reports them. */
export const COORDINATOR_ONLY_STATES: ReadonlySet<StatusRecord['state']> = new Set(['pending'])

/** What a record is checked against: the coordinator's clock and the task as the coordinator knows it. */
export interface RecordBoundsContext {
  nowMs: number
  /** The task's current revision: a device cannot hold a later one. */
  taskRevision: number
  /** When the task was created: no device worked on it before. */
  taskCreatedMs: number
  /** Bytes of the task's package (0 for tasks that fetch no content). */
  packageBytes: number
  /** @default MAX_CLOCK_SKEW_MS, the widest tolerance an agent may be configured with */
  maxClockSkewMs?: number
}

/** A record that is well formed and signed but that no honest device would issue; `reason` names what is wrong. */
export class ImplausibleRecordError extends Error {
  readonly reason: string
  constructor (reason: string, message: string) {
    super(message)
    this.name = 'ImplausibleRecordError'
    this.reason = reason
  }
}

/**
 * Checks a verified status record against the bounds of its task: its time
 * within the clock skew of now (and not before the task existed), its
 * revision not beyond the task's, its sequence number, byte counters, exit
 * code and retry time within sane bounds, and a state a device may report.
 * Pure: throws ImplausibleRecordError naming the first field out of bounds.
 */
export function checkRecordBounds (record: StatusRecord, context: RecordBoundsContext): void {
  const skewMs = context.maxClockSkewMs ?? MAX_CLOCK_SKEW_MS
  if (COORDINATOR_ONLY_STATES.has(record.state)) {
    throw new ImplausibleRecordError('state-not-reportable', `a device does not report the state ${record.state}; only the coordinator sets it`)
  }
  const earliest = context.taskCreatedMs - skewMs
  const latest = context.nowMs + skewMs
  if (record.at < earliest || record.at > latest) {
    throw new ImplausibleRecordError('time-out-of-range', `the record's time ${describeTime(record.at)} is not between the task's creation and now (${new Date(context.nowMs).toISOString()}), give or take ${Math.round(skewMs / 60_000)} minutes of clock skew`)
  }
  if (record.revision > context.taskRevision) {
    throw new ImplausibleRecordError('revision-ahead', `revision ${record.revision} is beyond the task's revision ${context.taskRevision}`)
  }
  if (record.seq > MAX_STATUS_SEQ) {
    throw new ImplausibleRecordError('seq-out-of-range', `sequence number ${record.seq} is beyond ${MAX_STATUS_SEQ}`)
  }
  if (record.bytesTotal > context.packageBytes) {
    throw new ImplausibleRecordError('bytes-out-of-range', `bytesTotal ${record.bytesTotal} is more than the package's ${context.packageBytes} bytes`)
  }
  if (record.bytesDone > record.bytesTotal) {
    throw new ImplausibleRecordError('bytes-out-of-range', `bytesDone ${record.bytesDone} is more than bytesTotal ${record.bytesTotal}`)
  }
  const maxReceived = context.packageBytes * MAX_RECEIVED_COPIES
  for (const field of ['bytesFromPeers', 'bytesFromOrigin'] as const) {
    if (record[field] > maxReceived) throw new ImplausibleRecordError('bytes-out-of-range', `${field} ${record[field]} is more than ${MAX_RECEIVED_COPIES} copies of the package`)
  }
  if (record.exitCode !== undefined && record.exitCode !== null && (record.exitCode < MIN_EXIT_CODE || record.exitCode > MAX_EXIT_CODE)) {
    throw new ImplausibleRecordError('exit-code-out-of-range', `exit code ${record.exitCode} is not a 32-bit value`)
  }
  if (record.retryAt !== undefined) {
    if (record.state !== 'failed') throw new ImplausibleRecordError('inconsistent-record', `a retry time belongs to a failed attempt, not to ${record.state}`)
    if (record.retryAt < record.at - skewMs || record.retryAt > record.at + MAX_RETRY_AHEAD_MS) {
      throw new ImplausibleRecordError('time-out-of-range', `the retry time ${describeTime(record.retryAt)} is not within ${MAX_RETRY_AHEAD_MS / (24 * 3600 * 1000)} days after the record's time`)
    }
  }
  if (record.windowAt !== undefined && (record.windowAt < record.at - skewMs || record.windowAt > record.at + MAX_RETRY_AHEAD_MS)) {
    throw new ImplausibleRecordError('time-out-of-range', `the next window's time ${describeTime(record.windowAt)} is not within ${MAX_RETRY_AHEAD_MS / (24 * 3600 * 1000)} days after the record's time`)
  }
  if (record.final === true && record.state !== 'failed') {
    throw new ImplausibleRecordError('inconsistent-record', `only a failed attempt is final, not ${record.state}`)
  }
}

/** A time as ISO text where it is a date at all, as the number otherwise. */
function describeTime (ms: number): string {
  const date = new Date(ms)
  return Number.isNaN(date.getTime()) ? String(ms) : date.toISOString()
}
