import { createHash } from 'node:crypto'
import { on } from 'node:events'
import type { SignedEnvelope } from '../../protocol/index.js'
import type { DeviceRecord, Store } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'
import { assertActive, type DeviceService } from '../devices/service.js'
import type { ManifestSigner } from '../manifest-signer.js'
import type { CoordinatorKeyring } from '../signing-key.js'
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
  /** The key that signs the manifests, and how many rotations led to it. */
  coordinatorKey: { keyId: string, sequence: number }
  /** Every key rotation statement, oldest first: agents follow them from the key they pinned. */
  keyRotations: SignedEnvelope[]
}

export interface AssignmentServiceInit {
  store: Store
  tasks: TaskService
  devices: DeviceService
  /** Signs manifests with the current key (re-signing those made before a rotation). */
  manifests: ManifestSigner
  /** Rotations wake held requests: every agent should learn of a new key at once. */
  keyring: CoordinatorKeyring
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
  private readonly manifests: ManifestSigner
  private readonly keyring: CoordinatorKeyring
  private readonly pollIntervalSeconds: number

  constructor (init: AssignmentServiceInit) {
    this.store = init.store
    this.tasks = init.tasks
    this.devices = init.devices
    this.manifests = init.manifests
    this.keyring = init.keyring
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
      const assignment: Assignment = { taskId: task.id, revision: task.revision, manifest: this.manifests.current(task) }
      if (this.tasks.phase(task) !== 'running') assignment.mode = 'finish'
      assignments.push(assignment)
    }
    assignments.sort((a, b) => a.taskId.localeCompare(b.taskId))
    const hash = createHash('sha256')
    hash.update(`${device.site}\n${device.groups.join(',')}\n${this.manifests.keyId}\n`)
    for (const assignment of assignments) hash.update(`${assignment.taskId}@${assignment.revision}${assignment.mode ?? ''}\n`)
    return {
      etag: hash.digest('hex').slice(0, 32),
      device: { id: device.id, site: device.site, groups: device.groups },
      assignments,
      pollIntervalSeconds: this.pollIntervalSeconds,
      coordinatorKey: { keyId: this.manifests.keyId, sequence: this.manifests.sequence },
      keyRotations: this.manifests.rotations
    }
  }

  /** The device, as long as it is active: a held request of a device blocked meanwhile ends with 401. */
  private async activeDevice (deviceId: string): Promise<DeviceRecord> {
    return assertActive(await this.devices.get(deviceId))
  }

  /**
   * Answers at once when the list differs from `etag`; otherwise waits for a
   * task or device change, up to `waitMs`, and answers with the list then.
   */
  async waitFor (deviceId: string, etag: string | undefined, waitMs: number, signal: AbortSignal): Promise<AssignmentList> {
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(Math.max(0, waitMs))])
    let list = await this.listFor(await this.activeDevice(deviceId))
    if (etag === undefined || list.etag !== etag || waitMs <= 0) return list
    const changes = new EventTarget()
    const notify = (): void => { changes.dispatchEvent(new Event('change')) }
    const notifyReleased = (_taskId: string, deviceIds: string[]): void => { if (deviceIds.includes(deviceId)) notify() }
    this.tasks.on('changed', notify)
    this.tasks.on('released', notifyReleased)
    this.devices.on('changed', notify)
    this.keyring.on('rotated', notify)
    try {
      for await (const event of on(changes, 'change', { signal: deadline })) {
        void event
        list = await this.listFor(await this.activeDevice(deviceId))
        if (list.etag !== etag) return list
      }
    } catch (error) {
      if ((error as Error).name !== 'AbortError') throw error
    } finally {
      this.tasks.off('changed', notify)
      this.tasks.off('released', notifyReleased)
      this.devices.off('changed', notify)
      this.keyring.off('rotated', notify)
    }
    return list
  }
}
