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
import { matchesTargets } from './targets.js'
import type { ReleaseLedger } from './releases.js'
import { releaseAllowance } from './release-rate.js'
import { MAX_VALIDITY_SECONDS, type CreateTaskRequest, type EditTaskRequest } from './schemas.js'
import { IN_PROGRESS_STATES, overlayRow, phaseOf, progressOf, syntheticRow, type TaskPhase, type TaskProgress } from './states.js'

export * from './schemas.js'
export * from './states.js'

const ARCHIVE_KINDS = new Set(['tar', 'tar.gz', 'zip'])
export const DEFAULT_MAX_ATTEMPTS = 3
export const DEFAULT_RETRY_DELAY_SECONDS = 24 * 3600
export const DEFAULT_ARCHIVE_ENTRY = 'install.sh'

export type TaskView = Omit<TaskRecord, 'manifest'> & {
  phase: TaskPhase
  releasedDevices: number
  progress: TaskProgress
  package: { id: string, name: string, version: string, sizeBytes: number } | null
}

export interface DeviceTaskView extends DeviceTaskRow {
  hostname: string
  site: string
  lastSeenAt?: string
  releasedAt?: string
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

export class TaskService extends EventEmitter<{ changed: [taskId: string], released: [taskId: string, deviceIds: string[]] }> {
  private readonly store: Store
  private readonly packages: PackageService
  private readonly devices: DeviceService
  private readonly directory: DirectoryService
  private readonly settings: SettingsService
  private readonly publishers: PublisherService
  readonly releases: ReleaseLedger
  private readonly key: CoordinatorKey
  readonly now: () => number
  /** Tasks that may still hand out manifests: active, paused, or deleted with devices finishing. */
  private readonly open_ = new Map<string, TaskRecord>()

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
    this.now = init.now ?? Date.now
  }

  async open (): Promise<void> {
    for await (const task of this.store.collections.tasks.values()) {
      if (task.status !== 'cancelled') this.open_.set(task.id, task)
    }
  }

  /** The active devices a task's targets resolve to now. */
  async resolveTargets (targets: TaskTargets): Promise<DeviceRecord[]> {
    return (await this.devices.listActive()).filter(device => this.targets(device, targets))
  }

  /** Whether a device is among the targets, through its groups, site or the people using it. */
  targets (device: DeviceRecord, targets: TaskTargets): boolean {
    return matchesTargets(device, targets, this.directory.usersOf(device))
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
    this.checkShape(task, pkg)
    const record: TaskRecord = { ...task, manifest: signManifest(this.manifestOf(task, pkg), this.key) }
    await this.store.write([{ type: 'put', collection: 'tasks', key: record.id, value: record }])
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

  manifestOf (task: Omit<TaskRecord, 'manifest'>, pkg: PackageRecord): Manifest {
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
    const manifestPackage: Manifest['package'] = {
      id: pkg.id,
      name: pkg.name,
      version: pkg.version,
      platform: pkg.platform,
      arch: pkg.arch,
      kind: pkg.kind,
      fileName: pkg.fileName,
      sizeBytes: pkg.sizeBytes,
      sha256: pkg.sha256,
      chunkSizeBytes: pkg.chunkSizeBytes,
      chunks: pkg.chunks
    }
    if (pkg.publisherSignature !== undefined) manifestPackage.publisherSignature = pkg.publisherSignature
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
      conditions: { deferWhileVpn: task.deferWhileVpn },
      limits
    }
  }

  /** Signs the task's manifest again under a new revision when what devices see changed; writes the task. */
  private async commit (previous: TaskRecord, next: Omit<TaskRecord, 'manifest'>, pkg: PackageRecord | undefined, forceRevision = false): Promise<TaskRecord> {
    let record: TaskRecord = { ...next, manifest: previous.manifest }
    if (pkg !== undefined) {
      const { issuedAt: _before, revision: _r1, ...before } = JSON.parse(fromUtf8(fromBase64(previous.manifest.payload))) as Manifest
      const { issuedAt: _after, revision: _r2, ...after } = this.manifestOf(next, pkg)
      if (forceRevision || JSON.stringify(before) !== JSON.stringify(after)) {
        const revised = { ...next, revision: previous.revision + 1 }
        record = { ...revised, manifest: signManifest(this.manifestOf(revised, pkg), this.key) }
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
    for (const field of ['targets', 'name', 'destination', 'entry', 'overwrite', 'timeoutSeconds', 'maxAttempts', 'retryDelaySeconds', 'deferWhileVpn', 'reboot'] as const) {
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

  async resume (id: string): Promise<TaskRecord> {
    const task = await this.get(id)
    if (task.status === 'active') return task
    if (task.status !== 'paused') throw new TaskStateError(`task-${task.status}`, `task ${id} is ${task.status}`)
    const { manifest: _manifest, pausedAt: _pausedAt, ...next } = { ...task, status: 'active' as const, updatedAt: new Date(this.now()).toISOString() }
    return await this.commit(task, next, undefined)
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
    for await (const row of this.store.collections.deviceTasks.values({ prefix: `${task.id}!` })) {
      if (IN_PROGRESS_STATES.has(row.state)) finishing++
    }
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
    for await (const row of this.store.collections.deviceTasks.values({ prefix: `${task.id}!` })) if (row.state === 'failed') failed++
    if (failed === 0) throw new TaskStateError('no-failed-devices', `no device of task ${id} has failed`)
    const pkg = await this.packages.find(task.packageId)
    if (pkg === undefined) throw new TaskStateError('package-deleted', `the package of task ${id} was deleted`)
    const { manifest: _manifest, ...next } = { ...task, rerun: task.rerun + 1, updatedAt: new Date(this.now()).toISOString() }
    return { task: await this.commit(task, next, pkg, true), devices: failed }
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

  /** The rows of every device the task concerns: targeted now, released, or heard from. */
  async deviceRows (task: TaskRecord): Promise<DeviceTaskView[]> {
    const reported = new Map<string, DeviceTaskRow>()
    for await (const row of this.store.collections.deviceTasks.values({ prefix: `${task.id}!` })) reported.set(row.deviceId, row)
    const phase = this.phase(task)
    const open = phase !== 'cancelled' && phase !== 'deleted'
    const waitingReason = this.waitingReason(task, phase)
    const rows: DeviceTaskView[] = []
    for (const device of await this.devices.list()) {
      const row = reported.get(device.id)
      const releasedAt = this.releases.releasedAt(task.id, device.id)
      // A device that never reported shows while it is a target or was released to it, unless it has been blocked or retired since.
      if (row === undefined && (releasedAt === undefined || device.status !== 'active') && !(open && this.targets(device, task.targets))) continue
      const view = this.devices.view(device)
      const out: DeviceTaskView = { ...(row ?? syntheticRow(task, device, releasedAt, phase, waitingReason)), hostname: device.hostname, site: device.site }
      if (row !== undefined) overlayRow(out, task, phase)
      if (view.lastSeenAt !== undefined) out.lastSeenAt = view.lastSeenAt
      if (releasedAt !== undefined) out.releasedAt = new Date(releasedAt).toISOString()
      rows.push(out)
    }
    return rows.sort((a, b) => a.hostname.localeCompare(b.hostname))
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
    const rows = await this.deviceRows(task)
    const { manifest: _manifest, ...rest } = task
    const pkg = await this.packages.find(task.packageId)
    return {
      ...rest,
      phase: this.phase(task),
      releasedDevices: this.releases.count(task.id),
      package: pkg === undefined ? null : { id: pkg.id, name: pkg.name, version: pkg.version, sizeBytes: pkg.sizeBytes },
      progress: progressOf(rows)
    }
  }

  async row (taskId: string, deviceId: string): Promise<DeviceTaskRow | undefined> {
    return await this.store.collections.deviceTasks.get(deviceTaskKey(taskId, deviceId))
  }
}
