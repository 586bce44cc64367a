import pLimit from 'p-limit'
import type { Logger } from '../../protocol/logger.js'
import { ONLINE_WINDOW_MS, type DeviceService } from '../devices/service.js'
import type { RegisteredDevice } from '../devices/registry.js'
import type { DirectoryService } from '../directory/service.js'
import type { DeviceRecord, TaskRecord } from '../store/types.js'
import { releaseAllowance } from './release-rate.js'
import type { TaskService } from './service.js'
import { decidePhase, ringOf } from './phases.js'

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
  /** Whether this coordinator releases devices: of several sharing a store, only the leader does. @default always */
  leadership?: { readonly isLeader: boolean, on: (event: 'changed', listener: (leader: boolean) => void) => unknown, off: (event: 'changed', listener: (leader: boolean) => void) => unknown }
}

export interface TickResult {
  /** Devices released in this tick, by task. */
  released: Record<string, string[]>
  /** When the next start, rate slot or expiry is due, ms; absent: nothing ahead. */
  nextDueMs?: number
}

/** Online devices go first: a release slot spent on a device that is switched off is wasted for a minute. */
function releaseOrder (a: { online: boolean, device: RegisteredDevice }, b: { online: boolean, device: RegisteredDevice }): number {
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
  /** Devices that changed since the last pass: checked against the running tasks, alone. */
  private dirtyDevices = new Set<string>()
  /** Tasks that changed since the last pass: their targets are resolved again. */
  private dirtyTasks = new Set<string>()
  /** Every running task's targets are resolved again at the next pass (start, directory change, the periodic safety net). */
  private resolveAll = true
  private lastFullPassMs = 0
  /** Tasks whose targets were resolved, with the devices a rate left waiting (checked again before release). */
  private readonly waitingOf = new Map<string, string[]>()
  private readonly onTaskChanged = (taskId: string): void => { this.dirtyTasks.add(taskId); this.soon() }
  private readonly onDeviceChanged = (deviceId: string): void => { this.dirtyDevices.add(deviceId); this.soon() }
  private readonly onDirectoryChanged = (): void => { this.resolveAll = true; this.soon() }
  private readonly leadership?: SchedulerInit['leadership']

  constructor (init: SchedulerInit) {
    this.tasks = init.tasks
    this.devices = init.devices
    this.directory = init.directory
    this.logger = init.logger
    this.debounceMs = init.debounceMs ?? 50
    this.maxSleepMs = init.maxSleepMs ?? 60_000
    if (init.leadership !== undefined) this.leadership = init.leadership
    // Changes are noted even when ticks are driven by hand: the next tick looks at what changed.
    this.tasks.on('changed', this.onTaskChanged)
    this.devices.on('changed', this.onDeviceChanged)
    this.directory.on('changed', this.onDirectoryChanged)
    if (init.autoTick ?? true) this.start()
  }

  start (): void {
    if (!this.stopped) return
    this.stopped = false
    this.resolveAll = true
    this.leadership?.on('changed', this.wake)
    this.soon()
  }

  /** Stops ticking; resolves when a tick in progress has ended. */
  async stop (): Promise<void> {
    this.stopped = true

    this.leadership?.off('changed', this.wake)
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
    // Another coordinator of the shared store releases devices; this one waits to be told it leads.
    if (this.leadership !== undefined && !this.leadership.isLeader) return { released }
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
    const resolveAll = this.resolveAll || now - this.lastFullPassMs >= this.maxSleepMs
    const dirtyTasks = this.dirtyTasks
    const dirtyDevices = this.dirtyDevices
    this.resolveAll = false
    this.dirtyTasks = new Set()
    this.dirtyDevices = new Set()
    if (resolveAll) this.lastFullPassMs = now
    const registry = this.devices.registry
    for (const task of running) {
      // A phased rollout releases the rings up to the current one.
      const inRing = (device: RegisteredDevice): boolean => task.phases === undefined || task.rollout === undefined || ringOf(task.id, device, task.phases) <= task.rollout.current
      const mayRelease = (device: RegisteredDevice): boolean => !this.tasks.releases.isReleased(task.id, device.id) && inRing(device)
      let waiting: RegisteredDevice[]
      const known = this.waitingOf.get(task.id)
      if (resolveAll || dirtyTasks.has(task.id) || known === undefined) {
        // Through the indexes: the task's targets, not the fleet.
        waiting = this.tasks.resolveTargetsNow(task.targets).filter(mayRelease)
      } else {
        // Only what changed since: the devices a rate left waiting, and devices that changed.
        const candidates = new Map<string, RegisteredDevice>()
        for (const id of [...known, ...dirtyDevices]) {
          const device = registry.get(id)
          if (device !== undefined) candidates.set(id, device)
        }
        waiting = [...candidates.values()].filter(device => mayRelease(device) && this.tasks.targets(device, task.targets))
      }
      const chosen = waiting.length === 0 ? [] : this.choose(task, waiting, now)
      if (chosen.length > 0) {
        await this.tasks.releases.release(task.id, chosen, now)
        released[task.id] = chosen
        this.logger.info({ taskId: task.id, released: chosen.length, waiting: waiting.length - chosen.length }, 'devices released')
        this.tasks.emit('released', task.id, chosen)
      }
      const chosenSet = new Set(chosen)
      this.waitingOf.set(task.id, chosen.length === waiting.length ? [] : waiting.filter(device => !chosenSet.has(device.id)).map(device => device.id))
      if (chosen.length < waiting.length && task.devicesPerMinute !== undefined) {
        const { nextSlotAtMs } = releaseAllowance({ devicesPerMinute: task.devicesPerMinute, recentReleasesMs: this.tasks.releases.recentReleases(task.id, now), nowMs: now })
        if (nextSlotAtMs !== undefined) due(nextSlotAtMs)
      }
    }
    for (const taskId of [...this.waitingOf.keys()]) if (!running.some(task => task.id === taskId)) this.waitingOf.delete(taskId)
    for (const task of running) if (task.phases !== undefined) await this.advancePhases(task, now, due)
    return { released, ...(nextDueMs !== undefined ? { nextDueMs } : {}) }
  }

  /** Halts a phased rollout whose ring fails too often, or starts its next ring once the current one succeeded and soaked. */
  private async advancePhases (task: TaskRecord, now: number, due: (at: number) => void): Promise<void> {
    if (task.phases === undefined || task.rollout === undefined || task.halted !== undefined) return
    // From the task's progress counters: a pass costs a read of a few counters, not of the task's rows.
    const rings = await this.tasks.rings(task)
    const current = rings?.[task.rollout.current]
    if (current === undefined) return
    const decision = decidePhase({ phases: task.phases, state: task.rollout, counts: current, nowMs: now })
    if (decision.action === 'halt') {
      await this.tasks.halt(task.id, decision.reason, 'automatic')
      this.logger.warn({ taskId: task.id, ring: task.rollout.current, reason: decision.reason }, 'phased rollout halted')
    } else if (decision.action === 'promote') {
      await this.tasks.promote(task.id, `automatic: ${decision.reason}`, task.rollout.current)
      this.logger.info({ taskId: task.id, ring: task.rollout.current + 1, reason: decision.reason }, 'phased rollout promoted')
    } else if (decision.action === 'wait') {
      due(decision.atMs)
    }
  }

  /** The devices to release now: all of them, or as many as the rate allows, online ones first. */
  private choose (task: TaskRecord, waiting: RegisteredDevice[], now: number): string[] {
    let quota = waiting.length
    if (task.devicesPerMinute !== undefined) {
      quota = Math.min(quota, releaseAllowance({ devicesPerMinute: task.devicesPerMinute, recentReleasesMs: this.tasks.releases.recentReleases(task.id, now), nowMs: now }).allowed)
    }
    if (quota === 0) return []
    if (quota >= waiting.length) return waiting.map(device => device.id)
    return waiting
      .map(device => ({ device, online: this.devices.lastContactMs(device.id) > now - ONLINE_WINDOW_MS }))
      .sort(releaseOrder)
      .slice(0, quota)
      .map(({ device }) => device.id)
  }
}
