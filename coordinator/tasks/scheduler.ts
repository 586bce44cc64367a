import pLimit from 'p-limit'
import type { Logger } from '../../protocol/logger.js'
import type { DeviceService } from '../devices/service.js'
import type { DirectoryService } from '../directory/service.js'
import type { DeviceRecord, TaskRecord } from '../store/types.js'
import { releaseAllowance } from './release-rate.js'
import type { TaskService } from './service.js'

export interface SchedulerInit {
  tasks: TaskService
  devices: DeviceService
  directory: DirectoryService
  logger: Logger
  /** Tick by itself: on task, device and directory changes, and when a start, a rate slot or an expiry comes. @default true */
  autoTick?: boolean
  /** Quiet time that gathers bursts of changes into one tick. @default 50 */
  debounceMs?: number
  /** Longest sleep between ticks, a safety net for changes nobody announced. @default 60000 */
  maxSleepMs?: number
}

export interface TickResult {
  /** Devices released in this tick, by task. */
  released: Record<string, string[]>
  /** When the next start, rate slot or expiry is due, ms; absent: nothing ahead. */
  nextDueMs?: number
}

/** Online devices go first: a release slot spent on a device that is switched off is wasted for a minute. */
function releaseOrder (a: { online: boolean, device: DeviceRecord }, b: { online: boolean, device: DeviceRecord }): number {
  if (a.online !== b.online) return a.online ? -1 : 1
  return a.device.hostname.localeCompare(b.device.hostname) || a.device.id.localeCompare(b.device.id)
}

/**
 * Releases the devices of running tasks: every targeted device at once, or
 * at most N per minute under rate control. A device gets a task's manifest
 * only after its release; until then it shows `queued`. Targets are resolved
 * at each tick, so a device that joins a target later is released too.
 */
export class Scheduler {
  private readonly tasks: TaskService
  private readonly devices: DeviceService
  private readonly directory: DirectoryService
  private readonly logger: Logger
  private readonly debounceMs: number
  private readonly maxSleepMs: number
  private readonly serial = pLimit(1)
  private timer?: NodeJS.Timeout
  private debounce?: NodeJS.Timeout
  private stopped = true
  /** Tasks whose expiry was already announced. */
  private readonly expired = new Set<string>()
  private readonly wake = (): void => { this.soon() }

  constructor (init: SchedulerInit) {
    this.tasks = init.tasks
    this.devices = init.devices
    this.directory = init.directory
    this.logger = init.logger
    this.debounceMs = init.debounceMs ?? 50
    this.maxSleepMs = init.maxSleepMs ?? 60_000
    if (init.autoTick ?? true) this.start()
  }

  start (): void {
    if (!this.stopped) return
    this.stopped = false
    this.tasks.on('changed', this.wake)
    this.devices.on('changed', this.wake)
    this.directory.on('changed', this.wake)
    this.soon()
  }

  /** Stops ticking; resolves when a tick in progress has ended. */
  async stop (): Promise<void> {
    this.stopped = true
    this.tasks.off('changed', this.wake)
    this.devices.off('changed', this.wake)
    this.directory.off('changed', this.wake)
    clearTimeout(this.timer)
    clearTimeout(this.debounce)
    await this.serial(async () => {})
  }

  /** Ticks shortly, gathering a burst of changes into one pass. */
  soon (): void {
    if (this.stopped || this.debounce !== undefined) return
    this.debounce = setTimeout(() => {
      this.debounce = undefined
      void this.tick().catch(error => { this.logger.error({ err: error }, 'the scheduler tick failed') })
    }, this.debounceMs)
    this.debounce.unref()
  }

  /** One pass over the running tasks; ticks never overlap. */
  async tick (): Promise<TickResult> {
    return await this.serial(async () => {
      const result = await this.pass()
      if (!this.stopped) this.arm(result.nextDueMs)
      return result
    })
  }

  private arm (nextDueMs: number | undefined): void {
    clearTimeout(this.timer)
    const now = this.tasks.now()
    const delay = Math.min(this.maxSleepMs, Math.max(10, (nextDueMs ?? Number.POSITIVE_INFINITY) - now))
    this.timer = setTimeout(() => { void this.tick().catch(error => { this.logger.error({ err: error }, 'the scheduler tick failed') }) }, delay)
    this.timer.unref()
  }

  private async pass (): Promise<TickResult> {
    const now = this.tasks.now()
    const released: Record<string, string[]> = {}
    let nextDueMs: number | undefined
    const due = (at: number): void => { if (at > now && (nextDueMs === undefined || at < nextDueMs)) nextDueMs = at }
    for (const task of this.tasks.pending()) {
      due(Date.parse(task.validUntil))
      if (task.status === 'active') due(Date.parse(task.startAt))
    }
    for (const task of this.tasks.openTasks()) {
      // Agents holding a request must learn that the task expired, and views must show it.
      if (Date.parse(task.validUntil) > now || this.expired.has(task.id)) continue
      this.expired.add(task.id)
      this.tasks.emit('changed', task.id)
    }
    const running = this.tasks.releasing()
    if (running.length === 0) return { released, ...(nextDueMs !== undefined ? { nextDueMs } : {}) }
    const devices = await this.devices.listActive()
    for (const task of running) {
      const waiting = devices.filter(device => !this.tasks.releases.isReleased(task.id, device.id) && this.tasks.targets(device, task.targets))
      if (waiting.length === 0) continue
      const chosen = this.choose(task, waiting, now)
      if (chosen.length > 0) {
        await this.tasks.releases.release(task.id, chosen, now)
        released[task.id] = chosen
        this.logger.info({ taskId: task.id, released: chosen.length, waiting: waiting.length - chosen.length }, 'devices released')
        this.tasks.emit('released', task.id, chosen)
      }
      if (chosen.length < waiting.length && task.devicesPerMinute !== undefined) {
        const { nextSlotAtMs } = releaseAllowance({ devicesPerMinute: task.devicesPerMinute, recentReleasesMs: this.tasks.releases.recentReleases(task.id, now), nowMs: now })
        if (nextSlotAtMs !== undefined) due(nextSlotAtMs)
      }
    }
    return { released, ...(nextDueMs !== undefined ? { nextDueMs } : {}) }
  }

  /** The devices to release now: all of them, or as many as the rate allows, online ones first. */
  private choose (task: TaskRecord, waiting: DeviceRecord[], now: number): string[] {
    let quota = waiting.length
    if (task.devicesPerMinute !== undefined) {
      quota = Math.min(quota, releaseAllowance({ devicesPerMinute: task.devicesPerMinute, recentReleasesMs: this.tasks.releases.recentReleases(task.id, now), nowMs: now }).allowed)
    }
    if (quota === 0) return []
    return waiting
      .map(device => ({ device, online: this.devices.view(device).online }))
      .sort(releaseOrder)
      .slice(0, quota)
      .map(({ device }) => device.id)
  }
}
