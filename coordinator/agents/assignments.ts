import { createHash } from 'node:crypto'
import pLimit from 'p-limit'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { statusTopicOf, type SignedEnvelope } from '../../protocol/index.js'
import type { DeviceRecord, DeviceTaskRow, Store, TaskRecord, TaskTargets } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'
import { assertActive, ONLINE_WINDOW_MS, type DeviceService } from '../devices/service.js'
import { DEFAULT_SAMPLE_ROTATION_MS, DEFAULT_SITE_SAMPLE_SIZE, type DeviceRegistry, type RegisteredDevice } from '../devices/registry.js'
import type { DirectoryService } from '../directory/service.js'
import { inDepartment } from '../directory/service.js'
import type { InstallationIndex } from '../inventory/service.js'
import type { ManifestSigner } from '../manifest-signer.js'
import type { CoordinatorKeyring } from '../signing-key.js'
import { isDone, isSettled, type TaskService } from '../tasks/service.js'
import type { MaintenanceWindowService } from '../windows/service.js'
import { AssignmentDispatcher, type HeldRequest } from './dispatcher.js'
import type { DeviceCertificates } from '../devices/certificates.js'
import { ApiError } from '../errors.js'

/** Requests held open at most; past it a new one is answered 503 with Retry-After. */
export const DEFAULT_MAX_HELD_REQUESTS = 200_000
/** Answers worked out at once for polls that arrive; more wait in a queue of this many, past which polls are answered 503. */
export const DEFAULT_ANSWER_CONCURRENCY = 64
export const DEFAULT_MAX_QUEUED_ANSWERS = 20_000

/** The coordinator is too busy to take the request now; the agent tries again after `retryAfterSeconds` (spread with jitter). */
export class AssignmentsBusyError extends ApiError {
  constructor (message: string, retryAfterSeconds: number) {
    super(503, 'coordinator-busy', message, { expose: true, headers: { 'retry-after': String(retryAfterSeconds) } })
    this.name = 'AssignmentsBusyError'
  }
}

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
  /** A site cache: agents dial it first and keep it. */
  siteCache?: boolean
}

export interface AssignmentList {
  /** Changes whenever the list does; the agent sends it back to wait for the next change. */
  etag: string
  device: { id: string, site: string, groups: string[] }
  assignments: Assignment[]
  /**
   * A bounded sample of the site's other devices and their libp2p addresses
   * (its caches first, online peers preferred, rotating), so agents find each
   * other where multicast does not reach.
   */
  peers: SitePeer[]
  /**
   * Active devices of the site, the device included: its agents work out
   * who fetches from the origin from it (left out of the etag, so a site
   * that grows wakes nobody; answers carry the count as it is then).
   */
  siteDevices: number
  /** The device's certificate (device id, peer id, site, expiry), signed by the coordinator: presented to the peers it connects to. */
  certificate: SignedEnvelope
  /** Devices blocked or retired while a certificate of theirs may still be valid: their peers refuse them. */
  revokedDeviceIds: string[]
  /** For a site cache: manifests of the tasks that target its site, to fetch ahead and keep. */
  prefetch: Assignment[]
  /** A clear-cache request the device has not carried out yet. */
  clearCacheRequest?: number
  /** Seconds the agent should wait before polling again when it cannot hold a request open. */
  pollIntervalSeconds: number
  /**
   * Over how many seconds agents that lose the coordinator spread their
   * return: the fleet over the rate the coordinator takes reconnects at,
   * at most a poll interval. Not part of the etag (it moves with the fleet).
   */
  reconnectSpreadSeconds: number
  /** The key that signs the manifests, and how many rotations led to it. */
  coordinatorKey: { keyId: string, sequence: number }
  /** Every key rotation statement, oldest first: agents follow them from the key they pinned. */
  keyRotations: SignedEnvelope[]
  /** The gossip topic of the device's site, where its agents exchange status records and elect their relay. */
  statusTopic: string
  /** The device's maintenance windows (its own, its site's, its groups'), signed by the coordinator. */
  maintenanceWindows?: SignedEnvelope
}

export interface AssignmentServiceInit {
  store: Store
  tasks: TaskService
  devices: DeviceService
  /** Signs manifests with the current key (re-signing those made before a rotation). */
  manifests: ManifestSigner
  /** Rotations wake held requests: every agent should learn of a new key at once. */
  keyring: CoordinatorKeyring
  /** Device certificates and revocations. */
  certificates: DeviceCertificates
  /** @default 30 */
  pollIntervalSeconds?: number
  /** Reconnects per second the fleet's return after a restart is spread to (see reconnectSpreadSeconds). @default DEFAULT_RECONNECTS_PER_SECOND */
  reconnectsPerSecond?: number
  /** Maintenance windows handed to each device; absent: none. */
  windows?: MaintenanceWindowService
  /** The people using devices: a site cache prefetches the packages of tasks targeting them. */
  directory?: DirectoryService
  /** Which devices hold which packages (tasks for superseding packages target them). */
  installations?: InstallationIndex
  /** Site peers an answer names at most. @default DEFAULT_SITE_SAMPLE_SIZE */
  sitePeerSampleSize?: number
  /** How often a device's site sample rotates. @default DEFAULT_SAMPLE_ROTATION_MS */
  sampleRotationMs?: number
  /** @default DEFAULT_MAX_HELD_REQUESTS */
  maxHeldRequests?: number
  /** @default DEFAULT_MAX_QUEUED_ANSWERS */
  maxQueuedAnswers?: number
  now?: () => number
}

/** What the last answer worked out for a device was, and what it depended on. */
interface KnownAnswer {
  etag: string
  stamp: string
  /** The site sample the answer named (registry entries, not copies), with what it was drawn from. */
  sample?: { key: string, devices: RegisteredDevice[] }
  /** What the device's rows said when read, while no status record of the device is stored since. */
  rows?: KnownRows
}

/** A row as the answer needs it. */
type RowFacts = Pick<DeviceTaskRow, 'state' | 'final' | 'revision'>

interface KnownRows {
  /** The device's row version when they were read. */
  version: number
  /** When they were read: a task made later has no row unless a record came since (which changes the version). */
  readAtMs: number
  byTask: Map<string, RowFacts | undefined>
}

/** A remembered site sample is drawn again at least this often, so that online peers keep going first. */
const SAMPLE_REUSE_MS = ONLINE_WINDOW_MS

/** Answers remembered by etag at most (a few dozen bytes each); past it the oldest go. */
const MAX_KNOWN_ANSWERS = 200_000

/**
 * Reconnects per second a coordinator is taken to absorb after a restart:
 * about half the first polls per second measured on two cores, leaving room
 * for the enrollments and status records that come back with them.
 */
export const DEFAULT_RECONNECTS_PER_SECOND = 1000

/** Seconds over which `devices` agents spread their return: at `perSecond`, at most a poll interval; whole milliseconds. */
export function reconnectSpreadSeconds (devices: number, perSecond: number, pollIntervalSeconds: number): number {
  return Math.min(pollIntervalSeconds, Math.ceil(Math.max(0, devices) / Math.max(1, perSecond) * 1000) / 1000)
}

/**
 * Works out which task revisions a device must act on, and lets an agent
 * hold its request open until that changes. A held request is woken only by
 * the changes that concern it (see AssignmentDispatcher), and a poll whose
 * etag is still current is held without working the answer out again.
 */
export class AssignmentService {
  private readonly store: Store
  private readonly tasks: TaskService
  private readonly devices: DeviceService
  private readonly registry: DeviceRegistry
  private readonly manifests: ManifestSigner
  private readonly keyring: CoordinatorKeyring
  private readonly certificates: DeviceCertificates
  private readonly pollIntervalSeconds: number
  private readonly reconnectsPerSecond: number
  private readonly windows?: MaintenanceWindowService
  private readonly directory?: DirectoryService
  private readonly installations?: InstallationIndex
  private readonly sampleSize: number
  private readonly rotationMs: number
  private readonly now: () => number
  readonly dispatcher = new AssignmentDispatcher()
  private readonly maxHeld: number
  private readonly maxQueued: number
  private answering = 0
  private readonly answerQueue: Array<() => void> = []
  /** Grows with every change that may concern any device: tasks, keys, windows, the directory. */
  private version = 0
  /** Grows with every change of one device's answer: its record, its releases, its status records. */
  private readonly deviceVersions = new Map<string, number>()
  private readonly known = new Map<string, KnownAnswer>()
  /** Grows with each stored status record of a device: its remembered rows are read again. */
  private readonly rowVersions = new Map<string, number>()
  /**
   * Woken held requests work their answers out a few at a time, first woken
   * first: a release to 10,000 held devices answers them in slices rather
   * than all of them together at the end.
   */
  private readonly wokenAnswers = pLimit(DEFAULT_ANSWER_CONCURRENCY)
  /** Grows with every change of a device's record: a woken request reads the record again only then. */
  private readonly recordVersions = new Map<string, number>()

  constructor (init: AssignmentServiceInit) {
    this.store = init.store
    this.tasks = init.tasks
    this.devices = init.devices
    this.registry = init.devices.registry
    this.manifests = init.manifests
    this.keyring = init.keyring
    this.certificates = init.certificates
    this.pollIntervalSeconds = init.pollIntervalSeconds ?? 30
    this.reconnectsPerSecond = Math.max(1, init.reconnectsPerSecond ?? DEFAULT_RECONNECTS_PER_SECOND)
    if (init.windows !== undefined) this.windows = init.windows
    if (init.directory !== undefined) this.directory = init.directory
    if (init.installations !== undefined) this.installations = init.installations
    this.sampleSize = init.sitePeerSampleSize ?? DEFAULT_SITE_SAMPLE_SIZE
    this.rotationMs = init.sampleRotationMs ?? DEFAULT_SAMPLE_ROTATION_MS
    this.now = init.now ?? Date.now
    this.maxHeld = init.maxHeldRequests ?? DEFAULT_MAX_HELD_REQUESTS
    this.maxQueued = init.maxQueuedAnswers ?? DEFAULT_MAX_QUEUED_ANSWERS
    this.tasks.on('changed', taskId => { this.taskChanged(taskId) })
    this.tasks.on('released', (_taskId, deviceIds) => { this.devicesChanged(deviceIds) })
    this.registry.on('changed', (previous, next) => { this.deviceChanged(previous, next) })
    this.devices.on('changed', deviceId => {
      this.recordVersions.set(deviceId, (this.recordVersions.get(deviceId) ?? 0) + 1)
      this.devicesChanged([deviceId])
    })
    this.keyring.on('rotated', () => { this.version++; this.dispatcher.wake({ all: true }) })
    this.windows?.on('changed', scope => {
      this.version++
      this.dispatcher.wake({ sites: scope.sites, groups: scope.groups, deviceIds: this.idsOf(scope.deviceIds) })
    })
    this.directory?.on('changed', () => {
      // Who a department or role names changed: targets of such tasks may differ for anyone.
      this.version++
      this.dispatcher.wake({ all: true })
    })
  }

  /** Device ids of names that are ids or host names. */
  private idsOf (names: readonly string[]): string[] {
    const ids: string[] = []
    for (const name of names) {
      if (this.registry.get(name) !== undefined) ids.push(name)
      ids.push(...this.registry.idsOfHostname(name))
    }
    return ids
  }

  /** A device's answer may differ: the next poll works it out again, a held request wakes. */
  devicesChanged (deviceIds: Iterable<string>): void {
    const ids = [...deviceIds]
    for (const id of ids) this.deviceVersions.set(id, (this.deviceVersions.get(id) ?? 0) + 1)
    this.dispatcher.wake({ deviceIds: ids })
  }

  /** Status records change a device's rows (a finished task leaves its list): its next poll works the answer out again. */
  noteStatus (deviceIds: Iterable<string>): void {
    for (const id of deviceIds) {
      this.deviceVersions.set(id, (this.deviceVersions.get(id) ?? 0) + 1)
      this.rowVersions.set(id, (this.rowVersions.get(id) ?? 0) + 1)
    }
  }

  /** A task changed: the devices it was released to, and site caches (their prefetch lists), may see another answer. */
  private taskChanged (taskId: string): void {
    this.version++
    const released = this.tasks.releases
    const woken: string[] = []
    if (this.dispatcher.deviceCount <= released.count(taskId)) {
      for (const deviceId of this.dispatcher.heldDevices()) if (released.isReleased(taskId, deviceId)) woken.push(deviceId)
    } else {
      for (const deviceId of released.releasedIds(taskId)) if (this.dispatcher.isHeld(deviceId)) woken.push(deviceId)
    }
    this.dispatcher.wake({ deviceIds: woken, siteCaches: true })
  }

  /** A device joined, left or changed: its own answer, and the samples that name it, may differ. */
  private deviceChanged (previous: RegisteredDevice | undefined, next: RegisteredDevice | undefined): void {
    const id = (next ?? previous)!.id
    // Written: a request of the device woken from here on reads the record again.
    this.recordVersions.set(id, (this.recordVersions.get(id) ?? 0) + 1)
    if (previous !== undefined && next === undefined) {
      // Blocked or retired: every answer's revocation list changes; its site, where it had peers, hears of it at once, the others at their next answer.
      this.certificates.revoke({ id })
      this.version++
      this.dispatcher.wake({ sites: [previous.site] })
    } else if (previous === undefined && next !== undefined && this.certificates.revoked().includes(id)) {
      this.certificates.reinstate(id)
      this.version++
      this.dispatcher.wake({ sites: [next.site] })
    }
    const sampled = previous !== undefined && (next === undefined || previous.site !== next.site || previous.peerId !== next.peerId || previous.siteCache !== next.siteCache ||
      previous.addresses.join(' ') !== next.addresses.join(' '))
    const joined = next !== undefined && next.addresses.length > 0 && (previous === undefined || previous.addresses.length === 0 || previous.site !== next.site)
    if (!sampled && !joined) return
    const sites = new Set<string>()
    // In a site no larger than a sample every device names every other: all of them see the change.
    for (const site of [previous?.site, next?.site]) if (site !== undefined && this.registry.sitePeerCount(site) <= this.sampleSize + 1) sites.add(site)
    // A new site cache goes into every sample of its site.
    if (next?.siteCache === true && previous?.siteCache !== true) sites.add(next.site)
    this.dispatcher.wake({ sampling: [id], sites })
  }

  private stampOf (device: Pick<DeviceRecord, 'id' | 'site'>): string {
    return `${this.version}/${this.deviceVersions.get(device.id) ?? 0}/${this.registry.siteVersion(device.site)}/${this.epoch()}/${this.certificates.periodOf(this.now())}`
  }

  private epoch (): number {
    return Math.floor(this.now() / this.rotationMs)
  }

  private remember (deviceId: string, answer: KnownAnswer): void {
    this.known.delete(deviceId)
    this.known.set(deviceId, answer)
    if (this.known.size > MAX_KNOWN_ANSWERS) this.known.delete(this.known.keys().next().value!)
  }

  /**
   * The device's rows of these tasks. Remembered from its last answer while
   * no status record of the device was stored since: a wake after a release
   * (a task made since, which the device cannot have reported on) reads no row.
   */
  private async rowsOf (deviceId: string, tasks: readonly TaskRecord[], known: KnownAnswer | undefined): Promise<{ rows: Array<RowFacts | undefined>, remembered: KnownRows }> {
    const version = this.rowVersions.get(deviceId) ?? 0
    const readAtMs = this.now()
    const cached = known?.rows !== undefined && known.rows.version === version ? known.rows : undefined
    const rows: Array<RowFacts | undefined> = new Array(tasks.length)
    const unread: number[] = []
    for (const [index, task] of tasks.entries()) {
      if (cached?.byTask.has(task.id) === true) rows[index] = cached.byTask.get(task.id)
      else if (cached !== undefined && Date.parse(task.createdAt) > cached.readAtMs) rows[index] = undefined
      else unread.push(index)
    }
    if (unread.length > 0) {
      const stored = await this.store.collections.deviceTasks.getMany(unread.map(index => deviceTaskKey(tasks[index].id, deviceId)))
      for (const [at, index] of unread.entries()) {
        const row = stored[at]
        rows[index] = row === undefined ? undefined : { state: row.state, revision: row.revision, ...(row.final !== undefined ? { final: row.final } : {}) }
      }
    }
    const byTask = new Map<string, RowFacts | undefined>()
    for (const [index, task] of tasks.entries()) byTask.set(task.id, rows[index])
    return { rows, remembered: { version, readAtMs: unread.length > 0 || cached === undefined ? readAtMs : cached.readAtMs, byTask } }
  }

  async listFor (device: DeviceRecord): Promise<AssignmentList> {
    const stamp = this.stampOf(device)
    const assignments: Assignment[] = []
    const tasks = this.tasks.assignable()
    const known = this.known.get(device.id)
    const { rows, remembered } = await this.rowsOf(device.id, tasks, known)
    for (const [index, task] of tasks.entries()) {
      const row = rows[index]
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
    const sampleKey = `${device.site}/${this.registry.siteVersion(device.site)}/${this.epoch()}/${Math.floor(this.now() / SAMPLE_REUSE_MS)}`
    const sample = known?.sample?.key === sampleKey ? known.sample.devices : this.sampleOf(device)
    const mesh = this.meshOf(device, tasks, new Set(assignments.map(assignment => assignment.taskId)), sample)
    const hash = createHash('sha256')
    hash.update(`${device.site}\n${device.groups.join(',')}\n${this.manifests.keyId}\n`)
    for (const assignment of assignments) hash.update(`${assignment.taskId}@${assignment.revision}${assignment.mode ?? ''}\n`)
    for (const peer of mesh.peers) hash.update(`peer ${peer.peerId} ${peer.addresses.join(' ')}${peer.siteCache === true ? ' cache' : ''}\n`)
    const certificate = this.certificates.certificateFor(device)
    const revokedDeviceIds = this.certificates.revoked()
    hash.update(`certificate ${certificate.signature}\n`)
    for (const revoked of revokedDeviceIds) hash.update(`revoked ${revoked}\n`)
    for (const assignment of mesh.prefetch) hash.update(`prefetch ${assignment.taskId}@${assignment.revision}\n`)
    if (mesh.clearCacheRequest !== undefined) hash.update(`clear-cache ${mesh.clearCacheRequest}\n`)
    const maintenanceWindows = this.windows?.signedSetFor(device, this.keyring.current)
    if (maintenanceWindows !== undefined) hash.update(`windows ${maintenanceWindows.signature}\n`)
    const etag = hash.digest('hex').slice(0, 32)
    this.remember(device.id, { etag, stamp, sample: { key: sampleKey, devices: sample }, rows: remembered })
    return {
      etag,
      device: { id: device.id, site: device.site, groups: device.groups },
      assignments,
      ...mesh,
      certificate,
      revokedDeviceIds,
      pollIntervalSeconds: this.pollIntervalSeconds,
      reconnectSpreadSeconds: reconnectSpreadSeconds(this.registry.size, this.reconnectsPerSecond, this.pollIntervalSeconds),
      coordinatorKey: { keyId: this.manifests.keyId, sequence: this.manifests.sequence },
      keyRotations: this.manifests.rotations,
      statusTopic: statusTopicOf(this.manifests.originKeyId, device.site),
      ...(maintenanceWindows !== undefined ? { maintenanceWindows } : {})
    }
  }

  /** The device's sample of its site's peers: the same while neither the site nor the rotation changes. */
  private sampleOf (device: Pick<DeviceRecord, 'id' | 'site'>): RegisteredDevice[] {
    const now = this.now()
    const isOnline = (deviceId: string): boolean => this.devices.lastContactMs(deviceId) > now - ONLINE_WINDOW_MS
    return this.registry.sampleFor(device, { size: this.sampleSize, isOnline, epoch: this.epoch() })
  }

  /** The mesh part of a device's answer: a sample of its site's peers, a site cache's prefetch list, a pending clear-cache request. */
  private meshOf (device: DeviceRecord, tasks: readonly TaskRecord[], assigned: ReadonlySet<string>, sample: readonly RegisteredDevice[]): Pick<AssignmentList, 'peers' | 'siteDevices' | 'prefetch' | 'clearCacheRequest'> {
    const peers: SitePeer[] = sample
      .map(other => ({ deviceId: other.id, peerId: other.peerId, addresses: [...other.addresses], ...(other.siteCache ? { siteCache: true } : {}) }))
    const prefetch: Assignment[] = []
    if (device.siteCache === true) {
      for (const task of tasks) {
        if (task.action === 'uninstall' || assigned.has(task.id)) continue
        if (this.targetsSite(device.site, task.targets)) prefetch.push({ taskId: task.id, revision: task.revision, manifest: this.manifests.current(task) })
      }
      prefetch.sort((a, b) => a.taskId.localeCompare(b.taskId))
    }
    const pending = device.clearCacheRequest !== undefined && device.clearCacheRequest.id > (device.cacheClearedRequest ?? 0)
    return { peers, siteDevices: Math.max(1, this.registry.siteSize(device.site)), prefetch, ...(pending ? { clearCacheRequest: device.clearCacheRequest!.id } : {}) }
  }

  /** Whether a task's targets name an active device of the site, found through the registry rather than by listing the site. */
  targetsSite (site: string, targets: TaskTargets): boolean {
    if (this.registry.siteSize(site) === 0) return false
    if (targets.all === true || targets.sites?.includes(site) === true) return true
    if (targets.groups?.some(group => this.registry.siteHasGroup(site, group)) === true) return true
    const inSite = (id: string): boolean => this.registry.get(id)?.site === site
    if (targets.deviceIds !== undefined && this.idsOf(targets.deviceIds).some(inSite)) return true
    for (const packageId of targets.installedPackages ?? []) {
      for (const id of this.installations?.devicesOf(packageId) ?? []) if (inSite(id)) return true
    }
    if (this.directory !== undefined && ((targets.users?.length ?? 0) > 0 || (targets.departments?.length ?? 0) > 0 || (targets.roles?.length ?? 0) > 0)) {
      const users = new Set((targets.users ?? []).map(user => user.toLowerCase()))
      const roles = new Set((targets.roles ?? []).map(role => role.toLowerCase()))
      for (const user of this.directory.list()) {
        const named = users.has(user.id.toLowerCase()) || (user.role !== undefined && roles.has(user.role.toLowerCase())) ||
          (targets.departments?.some(department => inDepartment(user.department, department)) === true)
        if (named && this.idsOf(user.devices).some(inSite)) return true
      }
    }
    return false
  }

  /**
   * Answers at once when the list differs from `etag`; otherwise holds the
   * request until a change that concerns the device, up to `waitMs`, and
   * answers with the list then. A blocked device's held request ends with 401.
   */
  async waitFor (device: DeviceRecord, etag: string | undefined, waitMs: number, signal: AbortSignal): Promise<AssignmentList> {
    assertActive(device)
    const known = this.known.get(device.id)
    let list: AssignmentList | undefined
    // An etag that is still current: hold without working the answer out.
    if (etag === undefined || waitMs <= 0 || known === undefined || known.etag !== etag || known.stamp !== this.stampOf(device)) {
      list = await this.answerBounded(device)
      if (etag === undefined || list.etag !== etag || waitMs <= 0) return list
    }
    if (this.dispatcher.size >= this.maxHeld) {
      throw new AssignmentsBusyError(`${this.maxHeld} assignments requests are held open already; poll again later`, Math.max(1, Math.ceil(waitMs / 1000)))
    }
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(waitMs)])
    let current = device
    let recordVersion = this.recordVersions.get(device.id) ?? 0
    let woken = false
    let resume: (() => void) | undefined
    const held: HeldRequest = {
      deviceId: device.id,
      site: device.site,
      groups: device.groups,
      siteCache: device.siteCache === true,
      sample: list?.peers.map(peer => peer.deviceId) ?? this.sampleOf(device).map(peer => peer.id),
      wake: () => { woken = true; resume?.() }
    }
    const onAbort = (): void => { resume?.() }
    deadline.addEventListener('abort', onAbort)
    const release = this.dispatcher.hold(held)
    try {
      while (!deadline.aborted) {
        if (!woken) await new Promise<void>(resolve => { resume = resolve })
        resume = undefined
        if (deadline.aborted) break
        woken = false
        if ((this.recordVersions.get(device.id) ?? 0) !== recordVersion) {
          current = assertActive(await this.devices.get(device.id))
          recordVersion = this.recordVersions.get(device.id) ?? 0
        }
        list = await this.wokenAnswers(async () => {
          // A turn of the event loop between answers: the answers already worked out go out, and other requests get theirs.
          await nextTurn()
          return await this.listFor(current)
        })
        if (list.etag !== etag) return list
        this.dispatcher.resample(held, list.peers.map(peer => peer.deviceId))
      }
    } finally {
      release()
      deadline.removeEventListener('abort', onAbort)
    }
    return list ?? await this.listFor(current)
  }

  /**
   * Works a poll's answer out with a bounded number at once and a bounded
   * queue behind: a burst of polls (a coordinator restart with every agent
   * reconnecting) is answered 503 with Retry-After past the queue rather
   * than piling up until connections time out.
   */
  private async answerBounded (device: DeviceRecord): Promise<AssignmentList> {
    if (this.answering >= DEFAULT_ANSWER_CONCURRENCY) {
      if (this.answerQueue.length >= this.maxQueued) {
        throw new AssignmentsBusyError(`${this.answerQueue.length} assignments answers are waiting to be worked out; poll again later`, Math.max(1, Math.ceil(this.answerQueue.length / 2000)))
      }
      await new Promise<void>(resolve => { this.answerQueue.push(resolve) })
    } else {
      this.answering++
    }
    try {
      return await this.listFor(device)
    } finally {
      const next = this.answerQueue.shift()
      if (next !== undefined) next()
      else this.answering--
    }
  }

  /** How many assignments requests are held open now. */
  get heldRequests (): number {
    return this.dispatcher.size
  }

  /** Held requests woken since start: in all, or of one site's devices. */
  wokenRequests (site?: string): number {
    return site === undefined ? this.dispatcher.woken : this.dispatcher.wokenIn(site)
  }
}
