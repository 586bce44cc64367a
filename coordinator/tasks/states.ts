import { SETTLED_STATES, SUCCESS_STATES, type DeviceTaskState } from '../../protocol/index.js'
import type { DeviceRecord, DeviceTaskRow, TaskRecord } from '../store/types.js'

/** States in which a device is working on the task right now. */
export const IN_PROGRESS_STATES: ReadonlySet<DeviceTaskState> = new Set(['downloading', 'verifying', 'installing'])

/** What a task is doing now, from its status and its window. */
export type TaskPhase = 'scheduled' | 'running' | 'paused' | 'expired' | 'cancelled' | 'deleted'

export function phaseOf (task: Pick<TaskRecord, 'status' | 'startAt' | 'validUntil'>, nowMs: number): TaskPhase {
  if (task.status === 'cancelled' || task.status === 'deleted') return task.status
  if (Date.parse(task.validUntil) <= nowMs) return 'expired'
  if (task.status === 'paused') return 'paused'
  if (Date.parse(task.startAt) > nowMs) return 'scheduled'
  return 'running'
}

export interface TaskProgress {
  total: number
  counts: Partial<Record<DeviceTaskState, number>>
  settled: number
  succeeded: number
  failed: number
  percent: number
  bytesFromPeers: number
  bytesFromOrigin: number
  /** Share of the bytes devices received that did not come from the origin. */
  peerShare: number
}

export function isFailedForGood (row: Pick<DeviceTaskRow, 'state' | 'final'>): boolean {
  return row.state === 'failed' && row.final === true
}

/** Whether a device has nothing left to do in a task. */
export function isSettled (row: Pick<DeviceTaskRow, 'state' | 'final'>): boolean {
  return SETTLED_STATES.has(row.state) || isFailedForGood(row)
}

/**
 * Whether a device is done with a task: it succeeded (in any revision: an edit
 * does not install again), or settled the current revision.
 */
export function isDone (row: Pick<DeviceTaskRow, 'state' | 'final' | 'revision'>, task: Pick<TaskRecord, 'revision'> & Partial<Pick<TaskRecord, 'switchedFrom'>>): boolean {
  // A task switched to a superseding package installs it again where the old one succeeded.
  const since = task.switchedFrom?.[task.switchedFrom.length - 1]?.revision ?? 0
  return (SUCCESS_STATES.has(row.state) && row.revision >= since) || (row.revision === task.revision && isSettled(row))
}

/** The row of a device that has reported nothing for the task yet. */
export function syntheticRow (task: TaskRecord, device: Pick<DeviceRecord, 'id'>, releasedAt: number | undefined, phase: TaskPhase, waitingReason: string): DeviceTaskRow {
  let state: DeviceTaskState
  let message: string
  if (phase === 'cancelled' || phase === 'deleted') {
    state = 'cancelled'
    message = `the task was ${phase} before the device started`
  } else if (phase === 'expired') {
    state = 'expired'
    message = `the task's validity ended at ${task.validUntil} before the device started`
  } else if (releasedAt === undefined || phase === 'paused') {
    state = 'queued'
    message = releasedAt === undefined ? waitingReason : 'the task is paused'
  } else {
    state = 'pending'
    message = 'released; waiting for the device to report'
  }
  const at = new Date(releasedAt ?? Date.parse(task.createdAt)).toISOString()
  return {
    taskId: task.id,
    deviceId: device.id,
    state,
    message,
    revision: task.revision,
    attempt: 0,
    seq: 0,
    bytesTotal: 0,
    bytesDone: 0,
    bytesFromPeers: 0,
    bytesFromOrigin: 0,
    reportedAt: at,
    updatedAt: at
  }
}

/** What a reported row means now that the task may be over or paused. */
export function overlayRow (row: DeviceTaskRow, task: TaskRecord, phase: TaskPhase): void {
  if (isDone(row, task) || row.state === 'installing') return
  const last = `last state ${row.state}${row.message !== undefined ? `: ${row.message}` : ''}`
  if (phase === 'expired') {
    Object.assign(row, { state: 'expired', message: `the task's validity ended at ${task.validUntil}; ${last}`.slice(0, 4000) })
  } else if (phase === 'cancelled' || phase === 'deleted') {
    Object.assign(row, { state: 'cancelled', message: `the task was ${phase}; ${last}`.slice(0, 4000) })
  } else if (phase === 'paused' && (row.state === 'pending' || row.state === 'queued' || row.state === 'deferred-vpn' || row.state === 'waiting-for-window')) {
    Object.assign(row, { state: 'queued', message: `the task is paused; ${last}`.slice(0, 4000) })
  }
}

/** Progress of a task from its device rows: exact whatever order records arrived in. */
export function progressOf (rows: ReadonlyArray<Pick<DeviceTaskRow, 'state' | 'final' | 'bytesDone' | 'bytesTotal' | 'bytesFromPeers' | 'bytesFromOrigin'>>): TaskProgress {
  const counts: Partial<Record<DeviceTaskState, number>> = {}
  let settled = 0
  let succeeded = 0
  let failed = 0
  let fraction = 0
  let bytesFromPeers = 0
  let bytesFromOrigin = 0
  for (const row of rows) {
    counts[row.state] = (counts[row.state] ?? 0) + 1
    if (isSettled(row)) {
      settled++
      fraction += 1
    } else if (row.bytesTotal > 0) {
      // Downloading is most of the work; installing and verifying count as nine tenths.
      fraction += 0.9 * Math.min(1, row.bytesDone / row.bytesTotal)
    }
    if (SUCCESS_STATES.has(row.state)) succeeded++
    if (isFailedForGood(row)) failed++
    bytesFromPeers += row.bytesFromPeers
    bytesFromOrigin += row.bytesFromOrigin
  }
  const received = bytesFromPeers + bytesFromOrigin
  return {
    total: rows.length,
    counts,
    settled,
    succeeded,
    failed,
    percent: rows.length === 0 ? 0 : Math.round(1000 * fraction / rows.length) / 10,
    bytesFromPeers,
    bytesFromOrigin,
    peerShare: received === 0 ? 0 : bytesFromPeers / received
  }
}
