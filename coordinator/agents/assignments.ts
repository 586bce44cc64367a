import { createHash } from 'node:crypto'
import { on } from 'node:events'
import type { SignedEnvelope } from '../../protocol/index.js'
import type { DeviceRecord, Store } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'
import type { DeviceService } from '../devices/service.js'
import { isDone, isSettled, type TaskService } from '../tasks/service.js'

export interface Assignment {
  taskId: string
  revision: number
  manifest: SignedEnvelope
  /**
   * `finish`: the task is paused or deleted; the device finishes a download
   * or install already under way but starts nothing new (no first attempt, no
   * retry). Absent: work on it.
   */
  mode?: 'finish'
}

export interface AssignmentList {
  /** Changes whenever the list does; the agent sends it back to wait for the next change. */
  etag: string
  device: { id: string, site: string, groups: string[] }
  assignments: Assignment[]
  /** Seconds the agent should wait before polling again when it cannot hold a request open. */
  pollIntervalSeconds: number
}

export interface AssignmentServiceInit {
  store: Store
  tasks: TaskService
  devices: DeviceService
  /** @default 30 */
  pollIntervalSeconds?: number
}

/**
 * Works out which task revisions a device must act on, and lets an agent
 * hold its request open until that changes.
 */
export class AssignmentService {
  private readonly store: Store
  private readonly tasks: TaskService
  private readonly devices: DeviceService
  private readonly pollIntervalSeconds: number

  constructor (init: AssignmentServiceInit) {
    this.store = init.store
    this.tasks = init.tasks
    this.devices = init.devices
    this.pollIntervalSeconds = init.pollIntervalSeconds ?? 30
  }

  async listFor (device: DeviceRecord): Promise<AssignmentList> {
    const assignments: Assignment[] = []
    for (const task of this.tasks.assignable()) {
      const row = await this.store.collections.deviceTasks.get(deviceTaskKey(task.id, device.id))
      // Only devices the scheduler released get a task (rate control, start time, pause).
      if (row === undefined && !this.tasks.releases.isReleased(task.id, device.id)) continue
      if (row !== undefined && isDone(row, task)) continue
      // A device that started keeps the task even after leaving the targets.
      if ((row === undefined || isSettled(row)) && !this.tasks.targets(device, task.targets)) continue
      const assignment: Assignment = { taskId: task.id, revision: task.revision, manifest: task.manifest }
      if (this.tasks.phase(task) !== 'running') assignment.mode = 'finish'
      assignments.push(assignment)
    }
    assignments.sort((a, b) => a.taskId.localeCompare(b.taskId))
    const hash = createHash('sha256')
    hash.update(`${device.site}\n${device.groups.join(',')}\n`)
    for (const assignment of assignments) hash.update(`${assignment.taskId}@${assignment.revision}${assignment.mode ?? ''}\n`)
    return {
      etag: hash.digest('hex').slice(0, 32),
      device: { id: device.id, site: device.site, groups: device.groups },
      assignments,
      pollIntervalSeconds: this.pollIntervalSeconds
    }
  }

  /**
   * Answers at once when the list differs from `etag`; otherwise waits for a
   * task or device change, up to `waitMs`, and answers with the list then.
   */
  async waitFor (deviceId: string, etag: string | undefined, waitMs: number, signal: AbortSignal): Promise<AssignmentList> {
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(Math.max(0, waitMs))])
    let list = await this.listFor(await this.devices.get(deviceId))
    if (etag === undefined || list.etag !== etag || waitMs <= 0) return list
    const changes = new EventTarget()
    const notify = (): void => { changes.dispatchEvent(new Event('change')) }
    const notifyReleased = (_taskId: string, deviceIds: string[]): void => { if (deviceIds.includes(deviceId)) notify() }
    this.tasks.on('changed', notify)
    this.tasks.on('released', notifyReleased)
    this.devices.on('changed', notify)
    try {
      for await (const event of on(changes, 'change', { signal: deadline })) {
        void event
        list = await this.listFor(await this.devices.get(deviceId))
        if (list.etag !== etag) return list
      }
    } catch (error) {
      if ((error as Error).name !== 'AbortError') throw error
    } finally {
      this.tasks.off('changed', notify)
      this.tasks.off('released', notifyReleased)
      this.devices.off('changed', notify)
    }
    return list
  }
}
