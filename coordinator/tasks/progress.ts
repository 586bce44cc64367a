import { SUCCESS_STATES, type DeviceTaskState } from '../../protocol/index.js'
import type { CounterOperation, DeviceTaskRow, Store, TaskRecord } from '../store/types.js'
import type { RingCounts } from './phases.js'
import { isFailedForGood, isSettled, overlayRow, type TaskPhase, type TaskProgress } from './states.js'

/**
 * A task's progress, kept as store counters that every stored row change
 * moves (in the same atomic write as the row), so that a view costs a read
 * of a few counters rather than a fold over the task's rows. The rows are
 * tallied by bucket: the revision, state and finality they were reported
 * in, and the ring of a phased rollout. What a bucket shows (an expired or
 * paused task turns unfinished rows into `expired` or `queued`) is worked
 * out when the task is viewed, from the bucket's key.
 */

/** Counters of one task start with this. */
export function progressPrefix (taskId: string): string {
  return `progress!${taskId}!`
}

/** Set to 1 once a task's counters hold every stored row (new tasks: at creation; older ones: at start-up). */
export function progressMarker (taskId: string): string {
  return `progress-kept!${taskId}`
}

/** Download progress is kept in millionths, so that counters stay whole numbers. */
const FRACTION_SCALE = 1_000_000

type BucketField = 'n' | 'peers' | 'origin' | 'fraction'

/** One row's share of its bucket. */
interface RowShare {
  key: string
  n: number
  peers: number
  origin: number
  fraction: number
}

function bucketKey (row: Pick<DeviceTaskRow, 'revision' | 'state' | 'final'>, ring: number | undefined): string {
  return `${row.revision}!${row.state}!${row.final === true ? 1 : 0}!${ring ?? ''}`
}

function shareOf (row: DeviceTaskRow, ring: number | undefined): RowShare {
  return {
    key: bucketKey(row, ring),
    n: 1,
    peers: row.bytesFromPeers,
    origin: row.bytesFromOrigin,
    fraction: row.bytesTotal > 0 ? Math.round(FRACTION_SCALE * Math.min(1, row.bytesDone / row.bytesTotal)) : 0
  }
}

/**
 * The counter additions that move a task's tally from `previous` (absent: the
 * device had no row) to `next`. `ring` is the ring each row belongs to; a
 * stored row keeps the ring it was counted under.
 */
export function progressOperations (previous: DeviceTaskRow | undefined, next: DeviceTaskRow): CounterOperation[] {
  const sums = new Map<string, number>()
  const add = (share: RowShare, sign: number): void => {
    for (const field of ['n', 'peers', 'origin', 'fraction'] as const) {
      if (share[field] === 0) continue
      const counter = `${progressPrefix(next.taskId)}${share.key}!${field}`
      sums.set(counter, (sums.get(counter) ?? 0) + sign * share[field])
    }
  }
  if (previous !== undefined) add(shareOf(previous, previous.ring), -1)
  add(shareOf(next, next.ring), 1)
  const operations: CounterOperation[] = []
  for (const [counter, delta] of sums) if (delta !== 0) operations.push({ type: 'add', counter, delta })
  return operations
}

/** A task's tally: the reported rows by bucket. */
export interface ProgressBucket {
  revision: number
  state: DeviceTaskState
  final: boolean
  ring?: number
  n: number
  peers: number
  origin: number
  /** Sum of the rows' downloaded share, in millionths. */
  fraction: number
}

export function bucketsOf (counters: Iterable<[string, number]>, taskId: string): ProgressBucket[] {
  const prefix = progressPrefix(taskId)
  const buckets = new Map<string, ProgressBucket>()
  for (const [name, value] of counters) {
    if (!name.startsWith(prefix)) continue
    const parts = name.slice(prefix.length).split('!')
    if (parts.length !== 5) continue
    const [revision, state, final, ring, field] = parts
    const key = parts.slice(0, 4).join('!')
    let bucket = buckets.get(key)
    if (bucket === undefined) {
      bucket = { revision: Number(revision), state: state as DeviceTaskState, final: final === '1', n: 0, peers: 0, origin: 0, fraction: 0 }
      if (ring !== '') bucket.ring = Number(ring)
      buckets.set(key, bucket)
    }
    bucket[field as BucketField] = value
  }
  return [...buckets.values()].filter(bucket => bucket.n > 0)
}

/** Reads a task's tally: a page or two of counters, whatever the number of devices. */
export async function readBuckets (store: Store, taskId: string): Promise<ProgressBucket[]> {
  const counters: Array<[string, number]> = []
  let cursor: string | undefined
  do {
    const page = await store.counters.page({ prefix: progressPrefix(taskId), limit: 5000, ...(cursor !== undefined ? { cursor } : {}) })
    for (const item of page.items) counters.push([item.key, item.value])
    cursor = page.cursor
  } while (cursor !== undefined)
  return bucketsOf(counters, taskId)
}

/** The state a bucket's rows show now that the task may be over or paused. */
export function shownState (bucket: Pick<ProgressBucket, 'revision' | 'state' | 'final'>, task: TaskRecord, phase: TaskPhase): DeviceTaskState {
  const row = { state: bucket.state, final: bucket.final, revision: bucket.revision } as DeviceTaskRow
  overlayRow(row, task, phase)
  return row.state
}

/** Devices of the task that reported nothing: released (`pending`) and targeted but not released yet (`queued`). */
export interface UnreportedDevices {
  pending: number
  queued: number
}

/** The state a device that reported nothing shows, as `syntheticRow` works it out. */
function unreportedState (released: boolean, phase: TaskPhase): DeviceTaskState {
  if (phase === 'cancelled' || phase === 'deleted') return 'cancelled'
  if (phase === 'expired') return 'expired'
  if (!released || phase === 'paused') return 'queued'
  return 'pending'
}

/** A task's progress from its tally and the devices that have not reported: the same figures `progressOf` folds from the rows. */
export function progressFromBuckets (buckets: readonly ProgressBucket[], unreported: UnreportedDevices, task: TaskRecord, phase: TaskPhase): TaskProgress {
  const counts: Partial<Record<DeviceTaskState, number>> = {}
  let total = 0
  let settled = 0
  let succeeded = 0
  let failed = 0
  let fraction = 0
  let bytesFromPeers = 0
  let bytesFromOrigin = 0
  for (const bucket of buckets) {
    const state = shownState(bucket, task, phase)
    const shown = { state, final: bucket.final }
    counts[state] = (counts[state] ?? 0) + bucket.n
    total += bucket.n
    if (isSettled(shown)) {
      settled += bucket.n
      fraction += bucket.n
    } else {
      // Downloading is most of the work; installing and verifying count as nine tenths.
      fraction += 0.9 * bucket.fraction / FRACTION_SCALE
    }
    if (SUCCESS_STATES.has(state)) succeeded += bucket.n
    if (isFailedForGood(shown)) failed += bucket.n
    bytesFromPeers += bucket.peers
    bytesFromOrigin += bucket.origin
  }
  for (const [released, n] of [[true, unreported.pending], [false, unreported.queued]] as const) {
    if (n <= 0) continue
    const state = unreportedState(released, phase)
    counts[state] = (counts[state] ?? 0) + n
    total += n
    if (isSettled({ state })) {
      settled += n
      fraction += n
    }
  }
  const received = bytesFromPeers + bytesFromOrigin
  return {
    total,
    counts,
    settled,
    succeeded,
    failed,
    percent: total === 0 ? 0 : Math.round(1000 * fraction / total) / 10,
    bytesFromPeers,
    bytesFromOrigin,
    peerShare: received === 0 ? 0 : bytesFromPeers / received
  }
}

/** The reported rows of one ring: how many, how many succeeded, how many failed for good. */
export function ringTally (buckets: readonly ProgressBucket[], ring: number, task: TaskRecord, phase: TaskPhase): RingCounts {
  const counts: RingCounts = { total: 0, succeeded: 0, failed: 0 }
  for (const bucket of buckets) {
    if (bucket.ring !== ring) continue
    const state = shownState(bucket, task, phase)
    counts.total += bucket.n
    if (SUCCESS_STATES.has(state)) counts.succeeded += bucket.n
    if (state === 'failed') counts.failed += bucket.n
  }
  return counts
}
