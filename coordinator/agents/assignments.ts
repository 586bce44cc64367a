import { createHash } from 'node:crypto'
import { on } from 'node:events'
import { statusTopicOf, type SignedEnvelope } from '../../protocol/index.js'
import type { DeviceRecord, Store, TaskRecord } from '../store/types.js'
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

/** A device of the same site that an agent may fetch chunks from. */
export interface SitePeer {
  deviceId: string
  peerId: string
  addresses: string[]
}

export interface AssignmentList {
  /** Changes whenever the list does; the agent sends it back to wait for the next change. */
  etag: string
  device: { id: string, site: string, groups: string[] }
  assignments: Assignment[]
  /** The site's other devices and their libp2p addresses, so agents find each other where multicast does not reach. */
  peers: SitePeer[]
  /** Peer ids of every enrolled device of the organisation: the agent refuses connections from any other. */
  allowedPeerIds: string[]
  /** For a site cache: manifests of the tasks that target its site, to fetch ahead and keep. */
  prefetch: Assignment[]
  /** A clear-cache request the device has not carried out yet. */
  clearCacheRequest?: number
  /** Seconds the agent should wait before polling again when it cannot hold a request open. */
  pollIntervalSeconds: number
  /** The key that signs the manifests, and how many rotations led to it. */
  coordinatorKey: { keyId: string, sequence: number }
  /** Every key rotation statement, oldest first: agents follow them from the key they pinned. */
  keyRotations: SignedEnvelope[]
  /** The gossip topic of the device's site, where its agents exchange status records and elect their relay. */
  statusTopic: string
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
    const active = await this.devices.listActive()
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
    const mesh = meshOf(device, active, {
      tasks: this.tasks.assignable().filter(task => task.action !== 'uninstall'),
      assigned: new Set(assignments.map(assignment => assignment.taskId)),
      targets: (other, targets) => this.tasks.targets(other, targets),
      manifestOf: task => this.manifests.current(task)
    })
    const hash = createHash('sha256')
    hash.update(`${device.site}\n${device.groups.join(',')}\n${this.manifests.keyId}\n`)
    for (const assignment of assignments) hash.update(`${assignment.taskId}@${assignment.revision}${assignment.mode ?? ''}\n`)
    for (const peer of mesh.peers) hash.update(`peer ${peer.peerId} ${peer.addresses.join(' ')}\n`)
    for (const peerId of mesh.allowedPeerIds) hash.update(`allow ${peerId}\n`)
    for (const assignment of mesh.prefetch) hash.update(`prefetch ${assignment.taskId}@${assignment.revision}\n`)
    if (mesh.clearCacheRequest !== undefined) hash.update(`clear-cache ${mesh.clearCacheRequest}\n`)
    return {
      etag: hash.digest('hex').slice(0, 32),
      device: { id: device.id, site: device.site, groups: device.groups },
      assignments,
      ...mesh,
      pollIntervalSeconds: this.pollIntervalSeconds,
      coordinatorKey: { keyId: this.manifests.keyId, sequence: this.manifests.sequence },
      keyRotations: this.manifests.rotations,
      statusTopic: statusTopicOf(this.manifests.originKeyId, device.site)
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

/**
 * The mesh part of a device's answer: its site peers, the organisation's
 * allow-list, a site cache's prefetch list and a pending clear-cache request.
 */
export function meshOf (device: DeviceRecord, active: DeviceRecord[], prefetchable: {
  /** Tasks whose packages a site cache may fetch ahead. */
  tasks: TaskRecord[]
  /** Tasks the device already has as assignments. */
  assigned: ReadonlySet<string>
  targets: (device: DeviceRecord, targets: TaskRecord['targets']) => boolean
  manifestOf: (task: TaskRecord) => SignedEnvelope
}): Pick<AssignmentList, 'peers' | 'allowedPeerIds' | 'prefetch' | 'clearCacheRequest'> {
  const peers: SitePeer[] = active
    .filter(other => other.id !== device.id && other.site === device.site && (other.peerAddresses?.length ?? 0) > 0)
    .map(other => ({ deviceId: other.id, peerId: other.peerId, addresses: other.peerAddresses ?? [] }))
    .sort((a, b) => a.deviceId.localeCompare(b.deviceId))
  const allowedPeerIds = [...new Set(active.map(other => other.peerId))].sort()
  const prefetch: Assignment[] = []
  if (device.siteCache === true) {
    const siteDevices = active.filter(other => other.site === device.site)
    for (const task of prefetchable.tasks) {
      if (prefetchable.assigned.has(task.id)) continue
      if (siteDevices.some(other => prefetchable.targets(other, task.targets))) prefetch.push({ taskId: task.id, revision: task.revision, manifest: prefetchable.manifestOf(task) })
    }
    prefetch.sort((a, b) => a.taskId.localeCompare(b.taskId))
  }
  const pending = device.clearCacheRequest !== undefined && device.clearCacheRequest.id > (device.cacheClearedRequest ?? 0)
  return { peers, allowedPeerIds, prefetch, ...(pending ? { clearCacheRequest: device.clearCacheRequest!.id } : {}) }
}
