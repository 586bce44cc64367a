import { createHash } from 'node:crypto'
import { on } from 'node:events'
import type { SignedEnvelope } from '../../protocol/index.js'
import type { DeviceRecord, Store, TaskRecord } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'
import type { DeviceService } from '../devices/service.js'
import { isSettled, type TaskService } from '../tasks/service.js'
import { matchesTargets } from '../tasks/targets.js'

export interface Assignment {
  taskId: string
  revision: number
  manifest: SignedEnvelope
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
    const active = await this.devices.listActive()
    for (const task of this.tasks.dispatching()) {
      const row = await this.store.collections.deviceTasks.get(deviceTaskKey(task.id, device.id))
      const targeted = matchesTargets(device, task.targets)
      // A device that settled the current revision is done with it; one that started keeps it even after leaving the targets.
      if (row !== undefined && row.revision === task.revision && isSettled(row)) continue
      if (!targeted && (row === undefined || isSettled(row))) continue
      assignments.push({ taskId: task.id, revision: task.revision, manifest: task.manifest })
    }
    assignments.sort((a, b) => a.taskId.localeCompare(b.taskId))
    const mesh = meshOf(device, active, this.tasks.dispatching(), new Set(assignments.map(assignment => assignment.taskId)))
    const hash = createHash('sha256')
    hash.update(`${device.site}\n${device.groups.join(',')}\n`)
    for (const assignment of assignments) hash.update(`${assignment.taskId}@${assignment.revision}\n`)
    for (const peer of mesh.peers) hash.update(`peer ${peer.peerId} ${peer.addresses.join(' ')}\n`)
    for (const peerId of mesh.allowedPeerIds) hash.update(`allow ${peerId}\n`)
    for (const assignment of mesh.prefetch) hash.update(`prefetch ${assignment.taskId}@${assignment.revision}\n`)
    if (mesh.clearCacheRequest !== undefined) hash.update(`clear-cache ${mesh.clearCacheRequest}\n`)
    return {
      etag: hash.digest('hex').slice(0, 32),
      device: { id: device.id, site: device.site, groups: device.groups },
      assignments,
      ...mesh,
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
    this.tasks.on('changed', notify)
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
      this.devices.off('changed', notify)
    }
    return list
  }
}

/**
 * The mesh part of a device's answer: its site peers, the organisation's
 * allow-list, a site cache's prefetch list and a pending clear-cache request.
 */
export function meshOf (device: DeviceRecord, active: DeviceRecord[], dispatching: TaskRecord[], assigned: ReadonlySet<string>): Pick<AssignmentList, 'peers' | 'allowedPeerIds' | 'prefetch' | 'clearCacheRequest'> {
  const peers: SitePeer[] = active
    .filter(other => other.id !== device.id && other.site === device.site && (other.peerAddresses?.length ?? 0) > 0)
    .map(other => ({ deviceId: other.id, peerId: other.peerId, addresses: other.peerAddresses ?? [] }))
    .sort((a, b) => a.deviceId.localeCompare(b.deviceId))
  const allowedPeerIds = [...new Set(active.map(other => other.peerId))].sort()
  const prefetch: Assignment[] = []
  if (device.siteCache === true) {
    const siteDevices = active.filter(other => other.site === device.site)
    for (const task of dispatching) {
      if (assigned.has(task.id)) continue
      if (siteDevices.some(other => matchesTargets(other, task.targets))) prefetch.push({ taskId: task.id, revision: task.revision, manifest: task.manifest })
    }
    prefetch.sort((a, b) => a.taskId.localeCompare(b.taskId))
  }
  const pending = device.clearCacheRequest !== undefined && device.clearCacheRequest.id > (device.cacheClearedRequest ?? 0)
  return { peers, allowedPeerIds, prefetch, ...(pending ? { clearCacheRequest: device.clearCacheRequest!.id } : {}) }
}
