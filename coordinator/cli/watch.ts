import { setTimeout as sleep } from 'node:timers/promises'
import { SETTLED_STATES, type DeviceTaskState } from '../../protocol/index.js'
import type { ApiClient } from './api-client.js'
import { followEvents } from './event-follower.js'
import { bar, formatBytes, printable } from './format.js'

export interface DeviceRow {
  deviceId: string
  hostname: string
  site: string
  state: string
  bytesTotal: number
  bytesDone: number
  bytesFromPeers: number
  bytesFromOrigin: number
  attempt: number
  exitCode?: number | null
  message?: string
  final?: boolean
}

export interface TaskSnapshot {
  task: any
  devices: DeviceRow[]
}

export function isRowSettled (row: DeviceRow): boolean {
  return SETTLED_STATES.has(row.state as DeviceTaskState) || (row.state === 'failed' && row.final === true)
}

export async function snapshot (client: ApiClient, taskId: string): Promise<TaskSnapshot> {
  const [task, rows] = await Promise.all([client.get(`/v1/tasks/${taskId}`), client.getEvery(`/v1/tasks/${taskId}/devices`, 'devices')])
  return { task, devices: (rows as DeviceRow[]).sort((a, b) => a.hostname.localeCompare(b.hostname)) }
}

/** Lines describing a task's progress: one per device and a total. */
export function renderProgress (snap: TaskSnapshot): string[] {
  const lines: string[] = []
  const nameWidth = Math.max(8, ...snap.devices.map(row => row.hostname.length))
  for (const row of snap.devices) {
    const fraction = isRowSettled(row) ? 1 : row.bytesTotal > 0 ? row.bytesDone / row.bytesTotal : 0
    const sources = `peers ${formatBytes(row.bytesFromPeers).padStart(9)}  origin ${formatBytes(row.bytesFromOrigin).padStart(9)}`
    const note = row.state === 'failed' && row.message !== undefined ? `  ${row.message.slice(0, 80)}` : ''
    lines.push(`${row.hostname.padEnd(nameWidth)}  ${row.site.padEnd(8)}  ${bar(fraction)} ${(fraction * 100).toFixed(0).padStart(3)}%  ${row.state.padEnd(24)} ${sources}${note}`)
  }
  const progress = snap.task.progress
  const counts = Object.entries(progress.counts as Record<string, number>).map(([state, count]) => `${state} ${count}`).join(', ')
  lines.push(`${'total'.padEnd(nameWidth)}  ${''.padEnd(8)}  ${bar(progress.percent / 100)} ${progress.percent.toFixed(0).padStart(3)}%  ${counts}; peers ${formatBytes(progress.bytesFromPeers)}, origin ${formatBytes(progress.bytesFromOrigin)}`)
  return lines
}

export interface WatchOptions {
  /** Polling interval when the event stream is not available, and the shortest time between redraws. @default 500 */
  intervalMs?: number
  /** Gives up after this long. */
  timeoutMs?: number
  signal?: AbortSignal
  /** Writes progress; on a terminal the block is redrawn in place. */
  output?: NodeJS.WriteStream
  /** Tells how the watch learns of changes: `events` (the stream) or `polling`. */
  onMode?: (mode: 'events' | 'polling') => void
}

/** Wakes the watch loop when the event stream says something changed. */
class ChangeSignal {
  private dirty = false
  private waiting: (() => void) | undefined

  notify (): void {
    this.dirty = true
    this.waiting?.()
  }

  /** Forgets earlier changes: called before reading the state they concern. */
  clear (): void {
    this.dirty = false
  }

  async wait (timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (this.dirty) return
    let wake = (): void => {}
    const woken = new Promise<void>(resolve => { wake = resolve })
    this.waiting = wake
    const timer = setTimeout(wake, Math.min(timeoutMs, 2 ** 31 - 1))
    const onAbort = (): void => { wake() }
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      await woken
    } finally {
      this.waiting = undefined
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
    }
  }
}

/**
 * Follows a task until every device has settled, drawing live progress. It
 * redraws when the coordinator's event stream (GET /v1/events) reports a
 * change, and polls only while the stream is unavailable.
 */
export async function watchTask (client: ApiClient, taskId: string, options: WatchOptions = {}): Promise<TaskSnapshot> {
  const output = options.output ?? process.stdout
  const interval = options.intervalMs ?? 500
  const redrawSpacingMs = Math.min(interval, 500)
  const deadline = options.timeoutMs !== undefined ? Date.now() + options.timeoutMs : Number.POSITIVE_INFINITY
  const changes = new ChangeSignal()
  const following = new AbortController()
  const stopFollowing = (): void => { following.abort() }
  options.signal?.addEventListener('abort', stopFollowing, { once: true })
  let live = false
  let mode: 'events' | 'polling' | undefined
  let followed: Promise<void> | undefined
  // Started once the task is known by its full id; its `ready` triggers a fresh read, so nothing between is missed.
  const follow = (id: string): Promise<void> => followEvents(client, `/v1/events?taskId=${encodeURIComponent(id)}`, {
    signal: following.signal,
    onMessage: () => { changes.notify() },
    onState: state => {
      live = state === 'live'
      changes.notify()
    }
  })
  let drawn = 0
  let lastPrinted = ''
  let lastPrintedAt = 0
  try {
    for (;;) {
      options.signal?.throwIfAborted()
      changes.clear()
      const current = live ? 'events' : 'polling'
      if (current !== mode) options.onMode?.(mode = current)
      const snap = await snapshot(client, taskId)
      followed ??= follow(String(snap.task.id))
      const drawnAt = Date.now()
      // Host names and messages come from devices: shown escaped before the cursor moves are added.
      const lines = renderProgress(snap).map(line => printable(line))
      if (output.isTTY === true) {
        if (drawn > 0) output.write(`\u001b[${drawn}A`)
        output.write(lines.map(line => `\u001b[2K${line}`).join('\n') + '\n')
        drawn = lines.length
      } else {
        const text = lines.join('\n')
        if (text !== lastPrinted && Date.now() - lastPrintedAt >= 2000) {
          output.write(text + '\n\n')
          lastPrinted = text
          lastPrintedAt = Date.now()
        }
      }
      const settled = snap.devices.length > 0 && snap.devices.every(isRowSettled)
      if (settled || snap.task.status === 'cancelled') {
        if (output.isTTY !== true && lines.join('\n') !== lastPrinted) output.write(lines.join('\n') + '\n\n')
        return snap
      }
      if (Date.now() > deadline) throw new Error(`task ${taskId} did not settle in time`)
      const signal = options.signal ?? following.signal
      if (live) {
        await changes.wait(deadline - Date.now(), signal)
        await sleep(Math.max(0, drawnAt + redrawSpacingMs - Date.now()), undefined, { signal })
      } else {
        // Also wakes when the stream comes (back) up.
        await changes.wait(interval, signal)
      }
    }
  } finally {
    following.abort()
    options.signal?.removeEventListener('abort', stopFollowing)
    await followed?.catch(() => {})
  }
}
