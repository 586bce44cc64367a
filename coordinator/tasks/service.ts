import { EventEmitter } from 'node:events'
import {
  DEFAULT_INSTALL_TIMEOUT_SECONDS, DEFAULT_TASK_VALIDITY_MS, MANIFEST_VERSION, fromBase64, fromUtf8, platformOfUninstall, signManifest, splitRunArgs,
  randomId, type Manifest
} from '../../protocol/index.js'
import { ApiError, ConflictError, NotFoundError, ValidationError } from '../errors.js'
import type { CoordinatorKey } from '../signing-key.js'
import type { DeviceRecord, DeviceTaskRow, PackageRecord, Store, TaskRecord, TaskTargets } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'
import { collect } from '../store/level-store.js'
import type { PackageService } from '../packages/service.js'
import type { DeviceService } from '../devices/service.js'
import type { DirectoryService } from '../directory/service.js'
import type { SettingsService } from '../settings/service.js'
import type { PublisherService } from '../publishers/service.js'
import { matchesTargets, type TargetDevice } from './targets.js'
import type { RegisteredDevice } from '../devices/registry.js'
import { inDepartment } from '../directory/service.js'
import { manifestPackageOf, rolloutOf, type RolloutParts } from './rollout-manifest.js'
import { initialRollout, ringOf, DEFAULT_MAX_FAILURE_PERCENT, DEFAULT_SUCCESS_PERCENT, type RingCounts } from './phases.js'
import { SUCCESS_STATES } from '../../protocol/index.js'
import type { InstallationIndex } from '../inventory/service.js'
import type { ReleaseLedger } from './releases.js'
import { releaseAllowance } from './release-rate.js'
import { MAX_VALIDITY_SECONDS, type CreateTaskRequest, type EditTaskRequest } from './schemas.js'
import { IN_PROGRESS_STATES, overlayRow, phaseOf, syntheticRow, type TaskPhase, type TaskProgress } from './states.js'
import { z } from 'zod'
import { DEVICE_TASK_STATES } from '../../protocol/index.js'
import { progressFromBuckets, progressMarker, progressOperations, readBuckets, ringTally, type ProgressBucket, type UnreportedDevices } from './progress.js'
import type { CounterOperation } from '../store/types.js'
import { DEFAULT_PAGE_LIMIT, MAX_SCANNED_PER_PAGE, decodeListingCursor, encodeListingCursor, indexAfter, pageQueryShape } from '../listing.js'

export * from './schemas.js'
export * from './states.js'

const ARCHIVE_KINDS = new Set(['tar', 'tar.gz', 'zip'])
export const DEFAULT_MAX_ATTEMPTS = 3
export const DEFAULT_RETRY_DELAY_SECONDS = 24 * 3600
export const DEFAULT_ARCHIVE_ENTRY = 'install.sh'

/** One ring of a phased rollout as operators see it. */
export interface RingView extends RingCounts {
  index: number
  name: string
  /** done: the next ring was started; active: the ring being rolled out; pending: not released yet. */
  status: 'done' | 'active' | 'pending'
  percentSucceeded: number
  percentFailed: number
  successPercent: number
  maxFailurePercent: number
  startedAt?: string
  promotedAt?: string
  promotedBy?: string
  /** The earliest the next ring may start (its minimum soak). */
  soakUntil?: string
}

export type TaskView = Omit<TaskRecord, 'manifest'> & {
  phase: TaskPhase
  releasedDevices: number
  progress: TaskProgress
  /** A phased rollout's rings with their progress. */
  rings?: RingView[]
  package: { id: string, name: string, version: string, sizeBytes: number } | null
}

export interface DeviceTaskView extends DeviceTaskRow {
  hostname: string
  site: string
  /** A phased rollout: the device's ring (0 is the first). */
  ring?: number
  lastSeenAt?: string
  releasedAt?: string
}

/** GET /v1/tasks/:id/devices: a page of a task's device rows in device id order, optionally of one state and one site. */
export const taskDevicesQuerySchema = z.object({
  ...pageQueryShape,
  /** Only rows in this state (as shown: a paused task's waiting devices are `queued`). */
  state: z.enum(DEVICE_TASK_STATES).optional(),
  /** Only devices of this site. */
  site: z.string().trim().min(1).max(100).optional()
}).strict()

export type TaskDevicesQuery = z.infer<typeof taskDevicesQuerySchema>

export interface TaskDevicesPage {
  devices: DeviceTaskView[]
  /** Pass as `cursor` for the next page; absent on the last. A filtered page may hold fewer rows than asked and still have one. */
  nextCursor?: string
}

export interface TaskServiceInit {
  store: Store
  packages: PackageService
  devices: DeviceService
  directory: DirectoryService
  settings: SettingsService
  publishers: PublisherService
  releases: ReleaseLedger
  key: CoordinatorKey
  /** Which devices hold which packages: a task for a superseding package also targets those that hold what it supersedes. @default none */
  installations?: InstallationIndex
  now?: () => number
}

function parseRunArgs (runArgs: string | string[] | undefined): string[] {
  try {
    return typeof runArgs === 'string' ? splitRunArgs(runArgs) : (runArgs ?? [])
  } catch (error) {
    throw new ValidationError(`runArgs: ${(error as Error).message}`, [{ path: 'runArgs', message: (error as Error).message }])
  }
}

/** A task in a phase that does not allow the operation. */
export class TaskStateError extends ConflictError {
  constructor (reason: string, message: string) {
    super(reason, message)
    this.name = 'TaskStateError'
  }
}

export class TaskService extends EventEmitter<{ changed: [taskId: string, origin?: 'remote'], released: [taskId: string, deviceIds: string[]] }> {
  private readonly store: Store
  private readonly packages: PackageService
  private readonly devices: DeviceService
  private readonly directory: DirectoryService
  private readonly settings: SettingsService
  private readonly publishers: PublisherService
  readonly releases: ReleaseLedger
  private readonly key: CoordinatorKey
  private readonly installations?: InstallationIndex
  readonly now: () => number
  /** Tasks that may still hand out manifests: active, paused, or deleted with devices finishing. */
  private readonly open_ = new Map<string, TaskRecord>()
  /** Sorted target ids per task, with what they were resolved from (for paging a task's devices). */
  private readonly targetIdsCache = new Map<string, {
    stamp: string
    ids: string[]
    /** A phased task: each target's ring, in the order of `ids`. */
    rings?: number[]
    tally?: { releasedCount: number, released: number, queued: number, ringReleased: number[], ringQueued: number[] }
  }>()
  /** Grows with every directory change: targets by person, department or role may resolve differently. */
  private directoryVersion = 0

  constructor (init: TaskServiceInit) {
    super()
    // Every held assignments request listens here while it waits: as many listeners as devices waiting, not a leak.
    this.setMaxListeners(0)
    this.store = init.store
    this.packages = init.packages
    this.devices = init.devices
    this.directory = init.directory
    this.settings = init.settings
    this.publishers = init.publishers
    this.releases = init.releases
    this.key = init.key
    if (init.installations !== undefined) this.installations = init.installations
    this.now = init.now ?? Date.now
    this.directory.on('changed', () => { this.directoryVersion++ })
  }

  async open (): Promise<void> {
    const tasks: TaskRecord[] = []
    for await (const task of this.store.collections.tasks.values()) {
      tasks.push(task)
      if (task.status !== 'cancelled') this.open_.set(task.id, task)
    }
    await this.countProgressOnce(tasks)
  }

  /**
   * Tasks made before progress was kept in counters get theirs from one
   * fold over their rows, once; every later row change moves the counters.
   */
  private async countProgressOnce (tasks: readonly TaskRecord[]): Promise<void> {
    if (tasks.length === 0) return
    const markers = await this.store.counters.getMany(tasks.map(task => progressMarker(task.id)))
    for (const [index, task] of tasks.entries()) {
      if (markers[index] !== 0) continue
      const sums = new Map<string, number>()
      for await (const row of this.store.collections.deviceTasks.values({ prefix: `${task.id}!` })) {
        for (const operation of progressOperations(undefined, { ...row, ...this.ringFor(task, row.deviceId, row.ring) })) {
          sums.set(operation.counter, (sums.get(operation.counter) ?? 0) + operation.delta)
        }
      }
      const operations: CounterOperation[] = [...sums].map(([counter, delta]) => ({ type: 'add', counter, delta }))
      operations.push({ type: 'add', counter: progressMarker(task.id), delta: 1 })
      await this.store.write(operations)
    }
  }

  /** `{ ring }` of a device in a phased task (the one a stored row was counted under, when it has one); nothing otherwise. */
  ringFor (task: Pick<TaskRecord, 'id' | 'phases'>, deviceId: string, stored?: number): { ring?: number } {
    if (task.phases === undefined) return {}
    if (stored !== undefined) return { ring: stored }
    const device = this.devices.registry.get(deviceId)
    return { ring: ringOf(task.id, device ?? { id: deviceId, groups: [] }, task.phases) }
  }

  /**
   * The counter changes a stored row's change makes to its task's progress
   * (the status ingest writes them with the row); the row is given the ring
   * it is counted under.
   */
  progressChange (previous: DeviceTaskRow | undefined, next: DeviceTaskRow): { row: DeviceTaskRow, operations: CounterOperation[] } {
    const task = this.open_.get(next.taskId)
    const phases = task !== undefined ? { id: task.id, ...(task.phases !== undefined ? { phases: task.phases } : {}) } : { id: next.taskId }
    const before = previous === undefined ? undefined : { ...previous, ...this.ringFor(phases, previous.deviceId, previous.ring) }
    const row = { ...next, ...this.ringFor(phases, next.deviceId, before?.ring) }
    return { row, operations: progressOperations(before, row) }
  }

  /**
   * Reads tasks another coordinator sharing the store changed, and tells the
   * listeners (held requests, the scheduler) as `changed` with origin `remote`:
   * the coordinator that made the change already announced it to operators.
   */
  async reload (ids: readonly string[]): Promise<void> {
    const tasks = await this.store.collections.tasks.getMany([...ids])
    for (const [at, id] of ids.entries()) {
      const task = tasks[at]
      if (task === undefined || task.status === 'cancelled') this.open_.delete(id)
      else this.open_.set(id, task)
    }
    for (const id of ids) this.emit('changed', id, 'remote')
  }

  /** Reads every task again (the change channel was lost for a while). */
  async reloadAll (): Promise<void> {
    const seen = new Set<string>()
    for await (const task of this.store.collections.tasks.values()) {
      seen.add(task.id)
      if (task.status !== 'cancelled') this.open_.set(task.id, task)
      else this.open_.delete(task.id)
    }
    for (const id of [...this.open_.keys()]) if (!seen.has(id)) this.open_.delete(id)
    for (const id of seen) this.emit('changed', id, 'remote')
  }

  /**
   * The active devices a task's targets resolve to now, found through the
   * indexes of the device registry (site, group, host name), the directory
   * (people → their devices) and the installation index: the cost follows
   * the targets, not the fleet (a task for all lists everyone, once).
   */
  async resolveTargets (targets: TaskTargets): Promise<RegisteredDevice[]> {
    return this.resolveTargetsNow(targets)
  }

  resolveTargetsNow (targets: TaskTargets): RegisteredDevice[] {
    const registry = this.devices.registry
    if (targets.all === true) return [...registry.all()]
    const candidates = new Map<string, RegisteredDevice>()
    const add = (id: string): void => {
      const device = registry.get(id)
      if (device !== undefined) candidates.set(id, device)
    }
    const addName = (name: string): void => {
      add(name)
      for (const id of registry.idsOfHostname(name)) add(id)
    }
    for (const site of targets.sites ?? []) for (const device of registry.ofSite(site)) candidates.set(device.id, device)
    for (const group of targets.groups ?? []) for (const id of registry.idsOfGroup(group)) add(id)
    for (const name of targets.deviceIds ?? []) addName(name)
    for (const packageId of targets.installedPackages ?? []) for (const id of this.installations?.devicesOf(packageId) ?? []) add(id)
    if ((targets.users?.length ?? 0) > 0 || (targets.departments?.length ?? 0) > 0 || (targets.roles?.length ?? 0) > 0) {
      const users = new Set((targets.users ?? []).map(user => user.toLowerCase()))
      const roles = new Set((targets.roles ?? []).map(role => role.toLowerCase()))
      for (const user of this.directory.list()) {
        const named = users.has(user.id.toLowerCase()) || (user.role !== undefined && roles.has(user.role.toLowerCase())) ||
          (targets.departments?.some(department => inDepartment(user.department, department)) === true)
        if (named) for (const device of user.devices) addName(device)
      }
    }
    return [...candidates.values()].filter(device => this.targets(device, targets))
  }

  /** Whether a device is among the targets, through its groups, site or the people using it. */
  targets (device: TargetDevice | RegisteredDevice, targets: TaskTargets): boolean {
    const target = ('status' in device ? device : { ...device, status: 'active' as const }) as TargetDevice
    return matchesTargets(target, targets, this.directory.usersOf(device), packageId => this.installations?.has(packageId, device.id) === true)
  }

  private async checkPackageFor (action: TaskRecord['action'], pkg: PackageRecord): Promise<void> {
    if (action === 'uninstall' && pkg.uninstall === undefined) {
      throw new ValidationError(`package ${pkg.name} ${pkg.version} has no uninstall spec; set one first (meshdeploy package edit --uninstall-…)`, [{ path: 'action', message: 'the package has no uninstall spec' }])
    }
    if (action === 'uninstall' && pkg.uninstall !== undefined) {
      const platform = platformOfUninstall(pkg.uninstall)
      if (platform !== 'any' && pkg.platform !== 'any' && platform !== pkg.platform) {
        throw new ValidationError(`the uninstall spec is for ${platform}, the package for ${pkg.platform}`)
      }
    }
    if (!this.settings.get().securityVerification) return
    if (pkg.publisherSignature === undefined) {
      throw new ApiError(422, 'package-unsigned', `security verification is on and package ${pkg.name} ${pkg.version} carries no publisher signature; upload it again signed`)
    }
    if (await this.publishers.get(pkg.publisherSignature.keyId) === undefined) {
      throw new ApiError(422, 'unknown-publisher-key', `security verification is on and package ${pkg.name} ${pkg.version} was signed with key ${pkg.publisherSignature.keyId}, which is no longer registered`)
    }
  }

  async create (request: CreateTaskRequest, createdBy: string, extra: { requestId?: string } = {}): Promise<{ task: TaskRecord, resolvedDevices: number }> {
    const pkg = await this.packages.find(request.packageId)
    if (pkg === undefined) throw new ValidationError(`package ${request.packageId} does not exist`, [{ path: 'packageId', message: 'no such package' }])
    await this.checkPackageFor(request.action, pkg)
    const now = this.now()
    const startMs = request.startAt !== undefined ? Date.parse(request.startAt) : now
    const createdAt = new Date(now).toISOString()
    const task: Omit<TaskRecord, 'manifest'> = {
      id: randomId('task'),
      name: request.name ?? `${request.action} ${pkg.name} ${pkg.version}`,
      packageId: pkg.id,
      action: request.action,
      targets: request.targets,
      runArgs: parseRunArgs(request.runArgs),
      timeoutSeconds: request.timeoutSeconds ?? DEFAULT_INSTALL_TIMEOUT_SECONDS,
      maxAttempts: request.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      retryDelaySeconds: request.retryDelaySeconds ?? DEFAULT_RETRY_DELAY_SECONDS,
      deferWhileVpn: request.deferWhileVpn ?? false,
      reboot: request.reboot ?? { policy: 'never' },
      revision: 1,
      rerun: 0,
      status: 'active',
      createdAt,
      updatedAt: createdAt,
      createdBy,
      startAt: new Date(Math.max(startMs, now)).toISOString(),
      validUntil: new Date(request.validUntil !== undefined ? Date.parse(request.validUntil) : startMs + (request.validForSeconds !== undefined ? request.validForSeconds * 1000 : DEFAULT_TASK_VALIDITY_MS)).toISOString()
    }
    for (const field of ['bandwidthKBps', 'destination', 'entry', 'fileMode', 'overwrite', 'devicesPerMinute'] as const) {
      if (request[field] !== undefined) (task as Record<string, unknown>)[field] = request[field]
    }
    if (extra.requestId !== undefined) task.requestId = extra.requestId
    task.maintenanceWindows = request.maintenanceWindows ?? (request.action === 'distribute-files' ? 'ignore' : 'respect')
    // A package that supersedes others goes also to the devices that hold one of them.
    if (request.action === 'install' && (pkg.supersedes?.length ?? 0) > 0 && request.targetSuperseded !== false) {
      task.targets = { ...task.targets, installedPackages: [...new Set([...(task.targets.installedPackages ?? []), ...pkg.supersedes!.map(entry => entry.packageId)])] }
    }
    if (request.phases !== undefined) {
      task.phases = request.phases
      task.rollout = initialRollout(request.phases, task.startAt)
    }
    this.checkShape(task, pkg)
    const record: TaskRecord = { ...task, manifest: signManifest(this.manifestOf(task, pkg, await this.rollout(task, pkg)), this.key) }
    // A new task's counters hold its rows from the first: no fold is ever needed.
    await this.store.write([{ type: 'put', collection: 'tasks', key: record.id, value: record }, { type: 'add', counter: progressMarker(record.id), delta: 1 }])
    this.open_.set(record.id, record)
    this.emit('changed', record.id)
    return { task: record, resolvedDevices: (await this.resolveTargets(record.targets)).length }
  }

  /** Checks the settings that depend on each other and on the package. */
  private checkShape (task: Omit<TaskRecord, 'manifest'>, pkg: PackageRecord): void {
    const isArchive = ARCHIVE_KINDS.has(pkg.kind)
    if (task.action === 'distribute-files' && task.destination === undefined) {
      throw new ValidationError('distribute-files needs a destination folder', [{ path: 'destination', message: 'required for distribute-files' }])
    }
    if (task.action !== 'distribute-files' && (task.fileMode !== undefined || task.overwrite !== undefined)) {
      throw new ValidationError('fileMode and overwrite apply to distribute-files only', [{ path: task.fileMode !== undefined ? 'fileMode' : 'overwrite', message: 'only for distribute-files' }])
    }
    if (task.action === 'install' && isArchive) task.entry ??= DEFAULT_ARCHIVE_ENTRY
    if (task.entry !== undefined && !(task.action === 'install' && isArchive)) {
      throw new ValidationError('entry applies to installing archive packages only', [{ path: 'entry', message: `a ${pkg.kind} package has no entries to run` }])
    }
    const start = Date.parse(task.startAt)
    const end = Date.parse(task.validUntil)
    if (end <= start) throw new ValidationError('the validity must end after the start', [{ path: 'validUntil', message: `must be later than the start ${task.startAt}` }])
    if (end - start > MAX_VALIDITY_SECONDS * 1000) throw new ValidationError('the validity may last a year at most', [{ path: 'validUntil', message: 'at most a year after the start' }])
  }

  /** The dependencies and superseded packages a task's manifest carries, resolved now. */
  private async rollout (task: Pick<TaskRecord, 'action' | 'timeoutSeconds'>, pkg: PackageRecord): Promise<RolloutParts> {
    if (task.action !== 'install' || (pkg.dependsOn === undefined && pkg.supersedes === undefined)) return {}
    return rolloutOf(task, pkg, await this.packages.list())
  }

  manifestOf (task: Omit<TaskRecord, 'manifest'>, pkg: PackageRecord, rollout: RolloutParts = {}): Manifest {
    const install: Manifest['install'] = { runArgs: task.runArgs, timeoutSeconds: task.timeoutSeconds }
    if (task.entry !== undefined) install.entry = task.entry
    if (task.destination !== undefined) install.destination = task.destination
    if (task.fileMode !== undefined) install.fileMode = task.fileMode
    if (task.overwrite !== undefined) install.overwrite = task.overwrite
    if (pkg.detection !== undefined) install.detection = pkg.detection
    if (pkg.exitCodes !== undefined && Object.keys(pkg.exitCodes).length > 0) install.exitCodes = pkg.exitCodes
    if (task.action === 'uninstall' && pkg.uninstall !== undefined) install.uninstall = pkg.uninstall
    const limits: Manifest['limits'] = { maxAttempts: task.maxAttempts, retryDelaySeconds: task.retryDelaySeconds }
    if (task.bandwidthKBps !== undefined) limits.bandwidthKBps = task.bandwidthKBps
    const manifestPackage: Manifest['package'] = manifestPackageOf(pkg)
    return {
      type: 'meshdeploy.manifest',
      version: MANIFEST_VERSION,
      taskId: task.id,
      revision: task.revision,
      rerun: task.rerun,
      issuedAt: task.updatedAt,
      expiresAt: task.validUntil,
      action: task.action,
      package: manifestPackage,
      install,
      reboot: task.reboot,
      conditions: { deferWhileVpn: task.deferWhileVpn, ...(task.maintenanceWindows !== undefined ? { maintenanceWindows: task.maintenanceWindows } : {}) },
      limits,
      ...rollout
    }
  }

  /** Signs the task's manifest again under a new revision when what devices see changed; writes the task. */
  private async commit (previous: TaskRecord, next: Omit<TaskRecord, 'manifest'>, pkg: PackageRecord | undefined, forceRevision = false): Promise<TaskRecord> {
    let record: TaskRecord = { ...next, manifest: previous.manifest }
    if (pkg !== undefined) {
      const { issuedAt: _before, revision: _r1, ...before } = JSON.parse(fromUtf8(fromBase64(previous.manifest.payload))) as Manifest
      const rollout = await this.rollout(next, pkg)
      const { issuedAt: _after, revision: _r2, ...after } = this.manifestOf(next, pkg, rollout)
      if (forceRevision || JSON.stringify(before) !== JSON.stringify(after)) {
        const revised = { ...next, revision: previous.revision + 1 }
        record = { ...revised, manifest: signManifest(this.manifestOf(revised, pkg, rollout), this.key) }
      }
    }
    await this.store.write([{ type: 'put', collection: 'tasks', key: record.id, value: record }])
    if (record.status === 'cancelled') this.open_.delete(record.id)
    else this.open_.set(record.id, record)
    this.emit('changed', record.id)
    return record
  }

  async get (id: string): Promise<TaskRecord> {
    const task = this.open_.get(id) ?? await this.store.collections.tasks.get(id)
    if (task === undefined || task.status === 'deleted') throw new NotFoundError('task', id)
    return task
  }

  /** Tasks, newest first; deleted ones only when asked. */
  async list (options: { includeDeleted?: boolean } = {}): Promise<TaskRecord[]> {
    const tasks = await collect(this.store.collections.tasks.values())
    return tasks.filter(task => options.includeDeleted === true || task.status !== 'deleted').sort((a, b) => b.createdAt.localeCompare(a.createdAt))
  }

  /** Every task that is not cancelled (deleted ones included while devices may finish). */
  openTasks (): TaskRecord[] {
    return [...this.open_.values()]
  }

  /** Tasks whose manifests devices may hold: not cancelled and inside their validity. */
  assignable (): TaskRecord[] {
    const now = this.now()
    return [...this.open_.values()].filter(task => Date.parse(task.validUntil) > now)
  }

  /** Tasks the scheduler releases devices for now. */
  releasing (): TaskRecord[] {
    const now = this.now()
    return [...this.open_.values()].filter(task => phaseOf(task, now) === 'running')
  }

  /** Tasks that are not over yet (their start, a rate slot or their expiry is ahead). */
  pending (): TaskRecord[] {
    const now = this.now()
    return [...this.open_.values()].filter(task => task.status !== 'deleted' && Date.parse(task.validUntil) > now)
  }

  phase (task: TaskRecord): TaskPhase {
    return phaseOf(task, this.now())
  }

  /**
   * Edits a task that has not started, is paused or has expired. The
   * manifest is signed again under a higher revision when devices would see
   * a difference; they pick it up at their next assignment answer.
   */
  async edit (id: string, edit: EditTaskRequest): Promise<TaskRecord> {
    const task = await this.get(id)
    const phase = this.phase(task)
    if (phase === 'running') throw new TaskStateError('task-running', `task ${id} is running; pause it first (meshdeploy task pause ${id}), edit it, then resume it`)
    if (phase === 'cancelled') throw new TaskStateError('task-cancelled', `task ${id} was cancelled; create a new task instead`)
    const pkg = await this.packages.find(task.packageId)
    if (pkg === undefined) throw new TaskStateError('package-deleted', `the package of task ${id} was deleted`)
    const now = this.now()
    const { manifest: _manifest, ...next } = { ...task, updatedAt: new Date(now).toISOString() }
    for (const field of ['targets', 'name', 'destination', 'entry', 'overwrite', 'timeoutSeconds', 'maxAttempts', 'retryDelaySeconds', 'deferWhileVpn', 'reboot', 'maintenanceWindows'] as const) {
      if (edit[field] !== undefined) (next as Record<string, unknown>)[field] = edit[field]
    }
    for (const field of ['bandwidthKBps', 'fileMode', 'devicesPerMinute'] as const) {
      if (edit[field] === null) delete next[field]
      else if (edit[field] !== undefined) (next as Record<string, unknown>)[field] = edit[field]
    }
    if (edit.runArgs !== undefined) next.runArgs = parseRunArgs(edit.runArgs)
    if (edit.startAt !== undefined) next.startAt = new Date(Math.max(Date.parse(edit.startAt), now)).toISOString()
    if (edit.validUntil !== undefined) next.validUntil = edit.validUntil
    if (edit.validForSeconds !== undefined) next.validUntil = new Date(Math.max(Date.parse(next.startAt), now) + edit.validForSeconds * 1000).toISOString()
    if (Date.parse(next.validUntil) <= now) throw new ValidationError('the validity must end in the future', [{ path: 'validUntil', message: 'already past' }])
    this.checkShape(next, pkg)
    return await this.commit(task, next, pkg)
  }

  /** Stops releasing devices; devices already downloading or installing finish. */
  async pause (id: string): Promise<TaskRecord> {
    const task = await this.get(id)
    if (task.status === 'paused') return task
    if (task.status !== 'active') throw new TaskStateError(`task-${task.status}`, `task ${id} is ${task.status}`)
    const now = new Date(this.now()).toISOString()
    const { manifest: _manifest, ...next } = { ...task, status: 'paused' as const, pausedAt: now, updatedAt: now }
    return await this.commit(task, next, undefined)
  }

  /** Resumes a paused or halted task; a ring's automatic halt that an operator overrides this way does not trigger again in that ring. */
  async resume (id: string): Promise<TaskRecord> {
    const task = await this.get(id)
    if (task.status === 'active') return task
    if (task.status !== 'paused') throw new TaskStateError(`task-${task.status}`, `task ${id} is ${task.status}`)
    const { manifest: _manifest, pausedAt: _pausedAt, halted, ...next } = { ...task, status: 'active' as const, updatedAt: new Date(this.now()).toISOString() }
    if (halted !== undefined && next.rollout !== undefined) next.rollout = { ...next.rollout, haltOverridden: [...new Set([...(next.rollout.haltOverridden ?? []), next.rollout.current])] }
    return await this.commit(task, next, undefined)
  }

  /**
   * Halts a task (a phased rollout's ring failed too often, or an operator
   * says so): no more devices are released or start; those downloading or
   * installing finish. Resume it, or promote the next ring, to go on.
   */
  async halt (id: string, reason: string, by: string): Promise<TaskRecord> {
    const task = await this.get(id)
    if (task.status !== 'active' && task.status !== 'paused') throw new TaskStateError(`task-${task.status}`, `task ${id} is ${task.status}`)
    if (task.halted !== undefined) return task
    const now = new Date(this.now()).toISOString()
    const { manifest: _manifest, ...next } = { ...task, status: 'paused' as const, pausedAt: task.pausedAt ?? now, halted: { at: now, reason, by }, updatedAt: now }
    return await this.commit(task, next, undefined)
  }

  /** Starts the next ring of a phased rollout (by hand, or when the current one met its threshold); a halt ends with it. */
  async promote (id: string, by: string, expectedCurrent?: number): Promise<TaskRecord> {
    const task = await this.get(id)
    if (task.phases === undefined || task.rollout === undefined) throw new TaskStateError('not-phased', `task ${id} has no phases`)
    if (task.status !== 'active' && task.status !== 'paused') throw new TaskStateError(`task-${task.status}`, `task ${id} is ${task.status}`)
    const current = task.rollout.current
    if (expectedCurrent !== undefined && current !== expectedCurrent) return task
    if (current >= task.phases.length - 1) throw new TaskStateError('last-phase', `task ${id} is at its last ring already`)
    const now = new Date(this.now()).toISOString()
    const rings = task.rollout.rings.map((ring, index) => index === current ? { ...ring, promotedAt: now, promotedBy: by } : index === current + 1 ? { ...ring, startedAt: now } : ring)
    const { manifest: _manifest, halted, pausedAt, ...rest } = task
    const next: Omit<TaskRecord, 'manifest'> = { ...rest, rollout: { ...task.rollout, current: current + 1, rings }, updatedAt: now }
    // A halt ends with the promotion; a pause the operator asked for stays.
    if (halted === undefined && pausedAt !== undefined) next.pausedAt = pausedAt
    if (halted !== undefined) next.status = 'active'
    return await this.commit(task, next, undefined)
  }

  /** The rings of a phased rollout with their progress, from the task's progress counters and its targets. */
  async rings (task: TaskRecord, buckets?: readonly ProgressBucket[]): Promise<RingView[] | undefined> {
    if (task.phases === undefined || task.rollout === undefined) return undefined
    const tally = buckets ?? await readBuckets(this.store, task.id)
    const phase = this.phase(task)
    const targets = this.targetTally(task, phase)
    return task.phases.map((spec, index) => {
      const reported = ringTally(tally, index, task, phase)
      // Released targets that have not reported show as pending, unreleased ones as queued: both count in the ring's total.
      const counts: RingCounts = { ...reported, total: reported.total + Math.max(0, (targets.ringReleased[index] ?? 0) - reported.total) + (targets.ringQueued[index] ?? 0) }
      const state = task.rollout!.rings[index] ?? {}
      const view: RingView = {
        index,
        name: spec.name ?? `ring ${index + 1}`,
        status: index < task.rollout!.current ? 'done' : index === task.rollout!.current ? 'active' : 'pending',
        ...counts,
        percentSucceeded: counts.total === 0 ? 0 : Math.round(1000 * counts.succeeded / counts.total) / 10,
        percentFailed: counts.total === 0 ? 0 : Math.round(1000 * counts.failed / counts.total) / 10,
        successPercent: spec.successPercent ?? DEFAULT_SUCCESS_PERCENT,
        maxFailurePercent: spec.maxFailurePercent ?? DEFAULT_MAX_FAILURE_PERCENT
      }
      if (state.startedAt !== undefined) {
        view.startedAt = state.startedAt
        if ((spec.minSoakSeconds ?? 0) > 0) view.soakUntil = new Date(Date.parse(state.startedAt) + (spec.minSoakSeconds ?? 0) * 1000).toISOString()
      }
      if (state.promotedAt !== undefined) view.promotedAt = state.promotedAt
      if (state.promotedBy !== undefined) view.promotedBy = state.promotedBy
      return view
    })
  }

  /**
   * The task's targets now that have no row to count them: how many were
   * released and how many not, by ring. Kept per task until the targets or
   * the releases change; the cost follows the targets, in memory.
   */
  private targetTally (task: TaskRecord, phase: TaskPhase): { released: number, queued: number, ringReleased: number[], ringQueued: number[] } {
    const empty = { released: 0, queued: 0, ringReleased: [], ringQueued: [] }
    if (phase === 'cancelled' || phase === 'deleted') return empty
    const ids = this.targetIds(task)
    const cached = this.targetIdsCache.get(task.id)
    if (cached === undefined) return empty
    const releasedCount = this.releases.count(task.id)
    if (cached.tally !== undefined && cached.tally.releasedCount === releasedCount) return cached.tally
    if (task.phases !== undefined && cached.rings === undefined) {
      cached.rings = ids.map(id => this.ringFor(task, id).ring ?? 0)
    }
    const tally = { releasedCount, released: 0, queued: 0, ringReleased: [] as number[], ringQueued: [] as number[] }
    for (const [at, id] of ids.entries()) {
      const released = this.releases.isReleased(task.id, id)
      if (released) tally.released++
      else tally.queued++
      const ring = cached.rings?.[at]
      if (ring === undefined) continue
      const counts = released ? tally.ringReleased : tally.ringQueued
      counts[ring] = (counts[ring] ?? 0) + 1
    }
    cached.tally = tally
    return tally
  }

  /** Devices of the task with no row: released (pending) and targets not released yet (queued). */
  private unreported (task: TaskRecord, buckets: readonly ProgressBucket[], phase: TaskPhase): UnreportedDevices {
    const reported = buckets.reduce((sum, bucket) => sum + bucket.n, 0)
    const { queued } = this.targetTally(task, phase)
    // Devices report only what they were released: every row but a stray one is a released device's.
    return { pending: Math.max(0, this.releases.count(task.id) - reported), queued }
  }

  /** A task's progress: a read of its counters, whatever the number of its devices. */
  async progress (task: TaskRecord): Promise<{ progress: TaskProgress, buckets: ProgressBucket[] }> {
    const buckets = await readBuckets(this.store, task.id)
    const phase = this.phase(task)
    return { progress: progressFromBuckets(buckets, this.unreported(task, buckets, phase), task, phase), buckets }
  }

  /** No more devices start the task; devices stop unless their installer is already running. */
  async cancel (id: string, by = 'operator'): Promise<TaskRecord> {
    const task = await this.get(id)
    if (task.status === 'cancelled') return task
    const now = new Date(this.now()).toISOString()
    const { manifest: _manifest, ...next } = { ...task, status: 'cancelled' as const, endedAt: now, endedBy: by, updatedAt: now }
    return await this.commit(task, next, undefined)
  }

  /**
   * Deletes a task (Feilian): it releases no more devices and disappears from
   * the lists, but devices already downloading or installing finish.
   */
  async delete (id: string, by: string): Promise<{ task: TaskRecord, finishing: number }> {
    const task = await this.get(id)
    let finishing = 0
    for (const bucket of await readBuckets(this.store, task.id)) if (IN_PROGRESS_STATES.has(bucket.state)) finishing += bucket.n
    const now = new Date(this.now()).toISOString()
    const { manifest: _manifest, ...next } = { ...task, status: 'deleted' as const, endedAt: now, endedBy: by, updatedAt: now }
    return { task: await this.commit(task, next, undefined), finishing }
  }

  /** Gives failed devices a fresh attempt counter: they try again now, up to the attempt limit. */
  async rerun (id: string): Promise<{ task: TaskRecord, devices: number }> {
    const task = await this.get(id)
    const phase = this.phase(task)
    if (phase === 'cancelled') throw new TaskStateError('task-cancelled', `task ${id} was cancelled; create a new task instead`)
    if (phase === 'expired') throw new TaskStateError('task-expired', `task ${id} has expired; extend its validity first (meshdeploy task edit ${id} --valid-for-seconds …)`)
    let failed = 0
    for (const bucket of await readBuckets(this.store, task.id)) if (bucket.state === 'failed') failed += bucket.n
    if (failed === 0) throw new TaskStateError('no-failed-devices', `no device of task ${id} has failed`)
    const pkg = await this.packages.find(task.packageId)
    if (pkg === undefined) throw new TaskStateError('package-deleted', `the package of task ${id} was deleted`)
    const { manifest: _manifest, ...next } = { ...task, rerun: task.rerun + 1, updatedAt: new Date(this.now()).toISOString() }
    return { task: await this.commit(task, next, pkg, true), devices: failed }
  }

  /**
   * Switches the unfinished install tasks of the packages `pkg` supersedes to
   * `pkg` itself, in one call: each gets a new revision deploying the new
   * package, keeps its targets and settings, also targets the devices that
   * hold the old package, and devices that installed the old one install the
   * new one too. Returns the ids of the tasks switched.
   */
  async switchToSuperseding (pkg: PackageRecord, by: string): Promise<string[]> {
    const superseded = new Set((pkg.supersedes ?? []).map(entry => entry.packageId))
    if (superseded.size === 0) throw new TaskStateError('supersedes-nothing', `package ${pkg.name} ${pkg.version} supersedes no package`)
    await this.checkPackageFor('install', pkg)
    const switched: string[] = []
    for (const task of [...this.open_.values()]) {
      if (task.action !== 'install' || !superseded.has(task.packageId) || task.status === 'deleted' || this.phase(task) === 'expired') continue
      const now = new Date(this.now()).toISOString()
      const { manifest: _manifest, ...rest } = task
      const next: Omit<TaskRecord, 'manifest'> = {
        ...rest,
        packageId: pkg.id,
        targets: { ...task.targets, installedPackages: [...new Set([...(task.targets.installedPackages ?? []), ...superseded])] },
        switchedFrom: [...(task.switchedFrom ?? []), { packageId: task.packageId, at: now, by, revision: task.revision + 1 }],
        updatedAt: now
      }
      // A name made from the old package follows the new one; a name the operator chose stays.
      const old = await this.packages.find(task.packageId)
      if (old !== undefined && task.name === `install ${old.name} ${old.version}`) next.name = `install ${pkg.name} ${pkg.version}`
      this.checkShape(next, pkg)
      await this.commit(task, next, pkg, true)
      switched.push(task.id)
    }
    return switched
  }

  /** Cancels every unfinished task that uses a package; returns their ids. */
  async cancelForPackage (packageId: string, by: string): Promise<string[]> {
    const cancelled: string[] = []
    for (const task of [...this.open_.values()]) {
      if (task.packageId !== packageId || task.status === 'deleted') continue
      await this.cancel(task.id, by)
      cancelled.push(task.id)
    }
    return cancelled
  }

  /** Signs new revisions of the unfinished tasks of a package whose install settings changed; returns their ids. */
  async refreshForPackage (pkg: PackageRecord): Promise<string[]> {
    const refreshed: string[] = []
    for (const task of [...this.open_.values()]) {
      if (task.packageId !== pkg.id || task.status === 'deleted' || this.phase(task) === 'expired') continue
      const { manifest: _manifest, ...next } = { ...task, updatedAt: new Date(this.now()).toISOString() }
      const record = await this.commit(task, next, pkg)
      if (record.revision !== task.revision) refreshed.push(task.id)
    }
    return refreshed
  }

  /** The rows of every device the task concerns: targeted now, released, or heard from (scheduler passes, exports; request paths page). */
  async deviceRows (task: TaskRecord): Promise<DeviceTaskView[]> {
    const reported = new Map<string, DeviceTaskRow>()
    for await (const row of this.store.collections.deviceTasks.values({ prefix: `${task.id}!` })) reported.set(row.deviceId, row)
    const phase = this.phase(task)
    const open = phase !== 'cancelled' && phase !== 'deleted'
    // The devices the task concerns, not the fleet: those that reported, those released, those targeted now.
    const ids = new Set<string>(reported.keys())
    for (const id of this.releases.releasedIds(task.id)) ids.add(id)
    if (open) for (const id of this.targetIds(task)) ids.add(id)
    const rows = await this.rowsOf(task, [...ids], reported)
    return rows.sort((a, b) => a.hostname.localeCompare(b.hostname))
  }

  /**
   * One page of a task's device rows in device id order. The ids come from
   * three sorted sources merged from the cursor on: the stored rows (read
   * from the cursor, a page at a time), the released devices and the
   * targets (both sorted in memory, cached per task until they change).
   * Filters are applied to the rows as shown; at most MAX_SCANNED_PER_PAGE
   * devices are looked at per request, so a filtered page may be short.
   */
  async deviceRowsPage (task: TaskRecord, query: TaskDevicesQuery = {}): Promise<TaskDevicesPage> {
    const limit = query.limit ?? DEFAULT_PAGE_LIMIT
    const filters = { state: query.state, site: query.site }
    let after = query.cursor !== undefined ? decodeListingCursor(query.cursor, `tasks/${task.id}/devices`, filters) : undefined
    const phase = this.phase(task)
    const open = phase !== 'cancelled' && phase !== 'deleted'
    const released = this.releases.releasedIds(task.id)
    const targeted = open ? this.targetIds(task) : []
    const prefix = `${task.id}!`
    const devices: DeviceTaskView[] = []
    let scanned = 0
    let more = true
    while (more && devices.length < limit && scanned < MAX_SCANNED_PER_PAGE) {
      const want = limit - devices.length
      const reported = new Map<string, DeviceTaskRow>()
      for await (const row of this.store.collections.deviceTasks.values({ prefix, limit: want, ...(after !== undefined ? { after: prefix + after } : {}) })) reported.set(row.deviceId, row)
      const releasedFrom = indexAfter(released, after)
      const targetedFrom = indexAfter(targeted, after)
      const candidates = [...new Set([...reported.keys(), ...released.slice(releasedFrom, releasedFrom + want), ...targeted.slice(targetedFrom, targetedFrom + want)])].sort()
      if (candidates.length > want) candidates.length = want
      if (candidates.length === 0) {
        more = false
        break
      }
      const last = candidates[candidates.length - 1]
      scanned += candidates.length
      for (const row of await this.rowsOf(task, candidates, reported)) {
        if (query.state !== undefined && row.state !== query.state) continue
        if (query.site !== undefined && row.site !== query.site) continue
        devices.push(row)
      }
      after = last
      more = reported.size === want || indexAfter(released, last) < released.length || indexAfter(targeted, last) < targeted.length
    }
    devices.sort((a, b) => a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0)
    return more && after !== undefined ? { devices, nextCursor: encodeListingCursor(`tasks/${task.id}/devices`, filters, after) } : { devices }
  }

  /** The shown rows of these devices (ids of one task); `reported` holds the stored rows already read, the others are read here. */
  private async rowsOf (task: TaskRecord, ids: readonly string[], reported: Map<string, DeviceTaskRow>): Promise<DeviceTaskView[]> {
    if (ids.length === 0) return []
    const phase = this.phase(task)
    const open = phase !== 'cancelled' && phase !== 'deleted'
    const waitingReason = this.waitingReason(task, phase)
    const unread = ids.filter(id => !reported.has(id))
    if (unread.length > 0) {
      const stored = await this.store.collections.deviceTasks.getMany(unread.map(id => deviceTaskKey(task.id, id)))
      for (const row of stored) if (row !== undefined) reported.set(row.deviceId, row)
    }
    const records = await this.store.collections.devices.getMany([...ids])
    const rows: DeviceTaskView[] = []
    for (const device of records) {
      if (device === undefined) continue
      const row = reported.get(device.id)
      const releasedAt = this.releases.releasedAt(task.id, device.id)
      // A device that never reported shows while it is a target or was released to it, unless it has been blocked or retired since.
      if (row === undefined && (releasedAt === undefined || device.status !== 'active') && !(open && this.targets(device, task.targets))) continue
      const view = this.devices.view(device)
      const out: DeviceTaskView = { ...(row ?? syntheticRow(task, device, releasedAt, phase, waitingReason)), hostname: device.hostname, site: device.site }
      if (row !== undefined) overlayRow(out, task, phase)
      if (task.phases !== undefined) out.ring = ringOf(task.id, device, task.phases)
      if (view.lastSeenAt !== undefined) out.lastSeenAt = view.lastSeenAt
      if (releasedAt !== undefined) out.releasedAt = new Date(releasedAt).toISOString()
      rows.push(out)
    }
    return rows
  }

  /** The ids of the devices the task's targets resolve to now, sorted; kept while the task, the fleet's membership and the directory stay the same. */
  private targetIds (task: TaskRecord): readonly string[] {
    const stamp = `${task.revision}|${task.updatedAt}|${this.devices.registry.membershipVersion}|${this.directoryVersion}|${this.installations?.version ?? 0}`
    const cached = this.targetIdsCache.get(task.id)
    if (cached !== undefined && cached.stamp === stamp) return cached.ids
    const ids = this.resolveTargetsNow(task.targets).map(device => device.id).sort()
    this.targetIdsCache.set(task.id, { stamp, ids })
    return ids
  }

  /** Why a device that was not released yet waits. */
  private waitingReason (task: TaskRecord, phase: TaskPhase): string {
    if (phase === 'paused') return 'the task is paused'
    if (phase === 'scheduled') return `scheduled for ${task.startAt}`
    if (task.devicesPerMinute !== undefined) {
      const allowance = releaseAllowance({ devicesPerMinute: task.devicesPerMinute, recentReleasesMs: this.releases.recentReleases(task.id, this.now()), nowMs: this.now() })
      const next = allowance.nextSlotAtMs !== undefined ? `; next release at ${new Date(allowance.nextSlotAtMs).toISOString()}` : ''
      return `waiting for its turn: ${task.devicesPerMinute} device(s) per minute${next}`
    }
    return 'waiting for the scheduler'
  }

  async view (task: TaskRecord): Promise<TaskView> {
    const { progress, buckets } = await this.progress(task)
    const { manifest: _manifest, ...rest } = task
    const pkg = await this.packages.find(task.packageId)
    const rings = await this.rings(task, buckets)
    return {
      ...rest,
      phase: this.phase(task),
      releasedDevices: this.releases.count(task.id),
      package: pkg === undefined ? null : { id: pkg.id, name: pkg.name, version: pkg.version, sizeBytes: pkg.sizeBytes },
      progress,
      ...(rings !== undefined ? { rings } : {})
    }
  }

  async row (taskId: string, deviceId: string): Promise<DeviceTaskRow | undefined> {
    return await this.store.collections.deviceTasks.get(deviceTaskKey(taskId, deviceId))
  }
}
