import { EventEmitter } from 'node:events'
import { z } from 'zod'
import {
  DEFAULT_INSTALL_TIMEOUT_SECONDS, DEFAULT_TASK_VALIDITY_MS, MAX_INSTALL_TIMEOUT_SECONDS, SETTLED_STATES, SUCCESS_STATES,
  signManifest, splitRunArgs, randomId, type DeviceTaskState, type Manifest
} from '../../protocol/index.js'
import { NotFoundError, ValidationError } from '../errors.js'
import type { CoordinatorKey } from '../signing-key.js'
import type { DeviceRecord, DeviceTaskRow, PackageRecord, Store, TaskRecord } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'
import { collect } from '../store/level-store.js'
import type { PackageService } from '../packages/service.js'
import type { DeviceService } from '../devices/service.js'
import { matchesTargets, targetsSchema } from './targets.js'

const ARCHIVE_KINDS = new Set(['tar', 'tar.gz', 'zip'])
export const DEFAULT_MAX_ATTEMPTS = 3
export const DEFAULT_RETRY_DELAY_SECONDS = 24 * 3600
export const DEFAULT_ARCHIVE_ENTRY = 'install.sh'

export const createTaskSchema = z.object({
  packageId: z.string().regex(/^[0-9a-f]{64}$/, 'must be a package id'),
  action: z.enum(['install', 'distribute-files']),
  targets: targetsSchema,
  name: z.string().trim().min(1).max(200).optional(),
  /** A command line (split like a shell would, nothing expanded) or the arguments themselves. */
  runArgs: z.union([z.string().max(8192), z.array(z.string().max(4096)).max(64)]).optional(),
  bandwidthKBps: z.number().int().min(1).max(10_000_000).optional(),
  destination: z.string().min(1).max(1024).regex(/^\//, 'must be an absolute path').optional(),
  entry: z.string().min(1).max(255).regex(/^[^/\\]/, 'must be a path inside the archive').optional(),
  timeoutSeconds: z.number().int().min(1).max(MAX_INSTALL_TIMEOUT_SECONDS).optional(),
  maxAttempts: z.number().int().min(1).max(100).optional(),
  retryDelaySeconds: z.number().int().min(0).max(30 * 24 * 3600).optional(),
  validForSeconds: z.number().int().min(60).max(365 * 24 * 3600).optional()
}).strict()

export type CreateTaskRequest = z.infer<typeof createTaskSchema>

export interface TaskProgress {
  total: number
  counts: Partial<Record<DeviceTaskState, number>>
  settled: number
  succeeded: number
  failed: number
  percent: number
  bytesFromPeers: number
  bytesFromOrigin: number
  /** Share of the bytes devices received that did not come from the origin. */
  peerShare: number
}

export type TaskView = Omit<TaskRecord, 'manifest'> & { progress: TaskProgress, package: { id: string, name: string, version: string, sizeBytes: number } | null }

export interface DeviceTaskView extends DeviceTaskRow {
  hostname: string
  site: string
  lastSeenAt?: string
}

export interface TaskServiceInit {
  store: Store
  packages: PackageService
  devices: DeviceService
  key: CoordinatorKey
  now?: () => number
}

export function isFailedForGood (row: Pick<DeviceTaskRow, 'state' | 'final'>): boolean {
  return row.state === 'failed' && row.final === true
}

/** Whether a device has nothing left to do in a task. */
export function isSettled (row: Pick<DeviceTaskRow, 'state' | 'final'>): boolean {
  return SETTLED_STATES.has(row.state) || isFailedForGood(row)
}

export class TaskService extends EventEmitter<{ changed: [taskId: string] }> {
  private readonly store: Store
  private readonly packages: PackageService
  private readonly devices: DeviceService
  private readonly key: CoordinatorKey
  private readonly now: () => number
  private readonly active = new Map<string, TaskRecord>()

  constructor (init: TaskServiceInit) {
    super()
    this.store = init.store
    this.packages = init.packages
    this.devices = init.devices
    this.key = init.key
    this.now = init.now ?? Date.now
  }

  /** Loads the tasks that still dispatch. */
  async open (): Promise<void> {
    for await (const task of this.store.collections.tasks.values()) {
      if (task.status === 'active') this.active.set(task.id, task)
    }
  }

  async create (request: CreateTaskRequest, createdBy: string): Promise<{ task: TaskRecord, resolvedDevices: number }> {
    const pkg = await this.packages.find(request.packageId)
    if (pkg === undefined) throw new ValidationError(`package ${request.packageId} does not exist`, [{ path: 'packageId', message: 'no such package' }])
    let runArgs: string[]
    try {
      runArgs = typeof request.runArgs === 'string' ? splitRunArgs(request.runArgs) : (request.runArgs ?? [])
    } catch (error) {
      throw new ValidationError(`runArgs: ${(error as Error).message}`, [{ path: 'runArgs', message: (error as Error).message }])
    }
    const isArchive = ARCHIVE_KINDS.has(pkg.kind)
    if (request.action === 'distribute-files' && request.destination === undefined) {
      throw new ValidationError('distribute-files needs a destination folder', [{ path: 'destination', message: 'required for distribute-files' }])
    }
    if (request.action === 'install' && !isArchive && request.entry !== undefined) {
      throw new ValidationError('entry applies to archive packages only', [{ path: 'entry', message: `a ${pkg.kind} package has no entries` }])
    }
    const now = this.now()
    const task: Omit<TaskRecord, 'manifest'> = {
      id: randomId('task'),
      name: request.name ?? `${request.action} ${pkg.name} ${pkg.version}`,
      packageId: pkg.id,
      action: request.action,
      targets: request.targets,
      runArgs,
      timeoutSeconds: request.timeoutSeconds ?? DEFAULT_INSTALL_TIMEOUT_SECONDS,
      maxAttempts: request.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      retryDelaySeconds: request.retryDelaySeconds ?? DEFAULT_RETRY_DELAY_SECONDS,
      revision: 1,
      status: 'active',
      createdAt: new Date(now).toISOString(),
      updatedAt: new Date(now).toISOString(),
      createdBy,
      validUntil: new Date(now + (request.validForSeconds !== undefined ? request.validForSeconds * 1000 : DEFAULT_TASK_VALIDITY_MS)).toISOString()
    }
    if (request.bandwidthKBps !== undefined) task.bandwidthKBps = request.bandwidthKBps
    if (request.destination !== undefined) task.destination = request.destination
    if (request.action === 'install' && isArchive) task.entry = request.entry ?? DEFAULT_ARCHIVE_ENTRY
    const record: TaskRecord = { ...task, manifest: signManifest(this.manifestOf(task, pkg), this.key) }
    await this.store.write([{ type: 'put', collection: 'tasks', key: record.id, value: record }])
    this.active.set(record.id, record)
    this.emit('changed', record.id)
    const resolvedDevices = (await this.devices.listActive()).filter(device => matchesTargets(device, record.targets)).length
    return { task: record, resolvedDevices }
  }

  manifestOf (task: Omit<TaskRecord, 'manifest'>, pkg: PackageRecord): Manifest {
    const install: Manifest['install'] = { runArgs: task.runArgs, timeoutSeconds: task.timeoutSeconds }
    if (task.entry !== undefined) install.entry = task.entry
    if (task.destination !== undefined) install.destination = task.destination
    if (pkg.detection !== undefined) install.detection = pkg.detection
    const limits: Manifest['limits'] = { maxAttempts: task.maxAttempts, retryDelaySeconds: task.retryDelaySeconds }
    if (task.bandwidthKBps !== undefined) limits.bandwidthKBps = task.bandwidthKBps
    return {
      type: 'meshdeploy.manifest',
      taskId: task.id,
      revision: task.revision,
      issuedAt: task.updatedAt,
      expiresAt: task.validUntil,
      action: task.action,
      package: {
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
      },
      install,
      limits
    }
  }

  async get (id: string): Promise<TaskRecord> {
    const task = this.active.get(id) ?? await this.store.collections.tasks.get(id)
    if (task === undefined) throw new NotFoundError('task', id)
    return task
  }

  async list (): Promise<TaskRecord[]> {
    const tasks = await collect(this.store.collections.tasks.values())
    return tasks.sort((a, b) => b.createdAt.localeCompare(a.createdAt))
  }

  /** Tasks that are still dispatching to devices. */
  dispatching (): TaskRecord[] {
    const now = this.now()
    return [...this.active.values()].filter(task => Date.parse(task.validUntil) > now)
  }

  async cancel (id: string): Promise<TaskRecord> {
    const task = await this.get(id)
    if (task.status === 'cancelled') return task
    const cancelled: TaskRecord = { ...task, status: 'cancelled', updatedAt: new Date(this.now()).toISOString() }
    await this.store.write([{ type: 'put', collection: 'tasks', key: id, value: cancelled }])
    this.active.delete(id)
    this.emit('changed', id)
    return cancelled
  }

  /** Cancels every unfinished task that uses a package; returns their ids. */
  async cancelForPackage (packageId: string): Promise<string[]> {
    const cancelled: string[] = []
    for (const task of [...this.active.values()]) {
      if (task.packageId !== packageId) continue
      await this.cancel(task.id)
      cancelled.push(task.id)
    }
    return cancelled
  }

  /** The rows of every device the task concerns: targeted now, or heard from. */
  async deviceRows (task: TaskRecord): Promise<DeviceTaskView[]> {
    const reported = new Map<string, DeviceTaskRow>()
    for await (const row of this.store.collections.deviceTasks.values({ prefix: `${task.id}!` })) reported.set(row.deviceId, row)
    const devices = await this.devices.list()
    const rows: DeviceTaskView[] = []
    for (const device of devices) {
      const row = reported.get(device.id)
      if (row === undefined && !(task.status === 'active' && matchesTargets(device, task.targets))) continue
      const view = this.devices.view(device)
      const base = row ?? this.pendingRow(task, device)
      const out: DeviceTaskView = { ...base, hostname: device.hostname, site: device.site }
      if (view.lastSeenAt !== undefined) out.lastSeenAt = view.lastSeenAt
      if (row === undefined && task.status === 'cancelled') out.state = 'cancelled'
      rows.push(out)
    }
    return rows.sort((a, b) => a.hostname.localeCompare(b.hostname))
  }

  private pendingRow (task: TaskRecord, device: DeviceRecord): DeviceTaskRow {
    return {
      taskId: task.id,
      deviceId: device.id,
      state: Date.parse(task.validUntil) <= this.now() ? 'expired' : 'pending',
      revision: task.revision,
      attempt: 0,
      seq: 0,
      bytesTotal: 0,
      bytesDone: 0,
      bytesFromPeers: 0,
      bytesFromOrigin: 0,
      reportedAt: task.createdAt,
      updatedAt: task.createdAt
    }
  }

  async view (task: TaskRecord): Promise<TaskView> {
    const rows = await this.deviceRows(task)
    const { manifest, ...rest } = task
    void manifest
    const pkg = await this.packages.find(task.packageId)
    return {
      ...rest,
      package: pkg === undefined ? null : { id: pkg.id, name: pkg.name, version: pkg.version, sizeBytes: pkg.sizeBytes },
      progress: progressOf(rows)
    }
  }

  async row (taskId: string, deviceId: string): Promise<DeviceTaskRow | undefined> {
    return await this.store.collections.deviceTasks.get(deviceTaskKey(taskId, deviceId))
  }
}

/** Progress of a task from its device rows: exact whatever order records arrived in. */
export function progressOf (rows: ReadonlyArray<Pick<DeviceTaskRow, 'state' | 'final' | 'bytesDone' | 'bytesTotal' | 'bytesFromPeers' | 'bytesFromOrigin'>>): TaskProgress {
  const counts: Partial<Record<DeviceTaskState, number>> = {}
  let settled = 0
  let succeeded = 0
  let failed = 0
  let fraction = 0
  let bytesFromPeers = 0
  let bytesFromOrigin = 0
  for (const row of rows) {
    counts[row.state] = (counts[row.state] ?? 0) + 1
    if (isSettled(row)) {
      settled++
      fraction += 1
    } else if (row.bytesTotal > 0) {
      // Downloading is most of the work; installing and verifying count as nine tenths.
      fraction += 0.9 * Math.min(1, row.bytesDone / row.bytesTotal)
    }
    if (SUCCESS_STATES.has(row.state)) succeeded++
    if (isFailedForGood(row)) failed++
    bytesFromPeers += row.bytesFromPeers
    bytesFromOrigin += row.bytesFromOrigin
  }
  const received = bytesFromPeers + bytesFromOrigin
  return {
    total: rows.length,
    counts,
    settled,
    succeeded,
    failed,
    percent: rows.length === 0 ? 0 : Math.round(1000 * fraction / rows.length) / 10,
    bytesFromPeers,
    bytesFromOrigin,
    peerShare: received === 0 ? 0 : bytesFromPeers / received
  }
}
