import { EventEmitter } from 'node:events'
import { z } from 'zod'
import { randomId } from '../../protocol/index.js'
import { ConflictError, NotFoundError, ValidationError } from '../errors.js'
import type { DeviceRecord, PackageRecord, RequestRecord, RequestStatus, Store } from '../store/types.js'
import { collect } from '../store/level-store.js'
import type { PackageService } from '../packages/service.js'
import type { DeviceService } from '../devices/service.js'
import type { SettingsService } from '../settings/service.js'
import type { TaskService } from '../tasks/service.js'

const packageReference = z.string().trim().min(1).max(200)

/** What a device sends: a package by id (or unique id prefix) or by name, for itself. */
export const deviceRequestSchema = z.object({
  package: packageReference,
  /** The person at the device who asks, as the directory knows them. */
  user: z.string().trim().min(1).max(200).optional(),
  reason: z.string().trim().max(1000).optional()
}).strict()

/** What an operator tool sends on behalf of a user. */
export const operatorRequestSchema = deviceRequestSchema.extend({
  deviceId: z.string().trim().min(1).max(253)
}).strict()

export const decisionSchema = z.object({
  comment: z.string().trim().max(1000).optional()
}).strict()

export type DeviceRequest = z.infer<typeof deviceRequestSchema>

export interface RequestServiceInit {
  store: Store
  packages: PackageService
  devices: DeviceService
  tasks: TaskService
  settings: SettingsService
  now?: () => number
}

/**
 * Self-service (SCCM's request and approval): packages approved for
 * self-service can be requested for a device; an operator approves or denies
 * the request, or the auto-approve setting approves it at once. An approval
 * creates an install task for that one device.
 */
export class RequestService extends EventEmitter<{ changed: [request: RequestRecord] }> {
  private readonly store: Store
  private readonly packages: PackageService
  private readonly devices: DeviceService
  private readonly tasks: TaskService
  private readonly settings: SettingsService
  private readonly now: () => number

  constructor (init: RequestServiceInit) {
    super()
    this.store = init.store
    this.packages = init.packages
    this.devices = init.devices
    this.tasks = init.tasks
    this.settings = init.settings
    this.now = init.now ?? Date.now
  }

  /** Self-service packages a device may request: approved and for its platform and architecture. */
  async catalog (device: Pick<DeviceRecord, 'platform' | 'arch'>): Promise<PackageRecord[]> {
    return (await this.packages.list()).filter(pkg => pkg.selfService === true &&
      (pkg.platform === 'any' || pkg.platform === device.platform) && (pkg.arch === 'any' || pkg.arch === device.arch))
  }

  /**
   * Finds a self-service package by id, unique id prefix, or name (the
   * newest upload of that name). For an operator, a package that exists but
   * may not be requested says why; a device learns only that its catalog has
   * no such package, so that it cannot probe which packages and versions
   * exist beyond what it may request.
   */
  async resolvePackage (reference: string, device: Pick<DeviceRecord, 'platform' | 'arch'>, options: { forDevice?: boolean } = {}): Promise<PackageRecord> {
    const catalog = await this.catalog(device)
    const byId = catalog.filter(pkg => pkg.id === reference || (reference.length >= 8 && /^[0-9a-f]+$/.test(reference) && pkg.id.startsWith(reference)))
    if (byId.length === 1) return byId[0]
    const byName = catalog.filter(pkg => pkg.name.toLowerCase() === reference.toLowerCase())
    if (byName.length > 0) return byName[0]
    if (options.forDevice === true) throw new NotFoundError('self-service package', reference)
    const anyPackage = (await this.packages.list()).find(pkg => pkg.id === reference || pkg.name.toLowerCase() === reference.toLowerCase())
    if (anyPackage !== undefined && anyPackage.selfService !== true) {
      throw new ConflictError('not-self-service', `${anyPackage.name} ${anyPackage.version} is not approved for self-service; ask an operator to approve it (meshdeploy package edit … --self-service)`)
    }
    if (anyPackage !== undefined) throw new ConflictError('not-applicable', `${anyPackage.name} ${anyPackage.version} is a ${anyPackage.platform}/${anyPackage.arch} package; this device is ${device.platform}/${device.arch}`)
    throw new NotFoundError('self-service package', reference)
  }

  /**
   * Records a request; the same package asked again for the same device while
   * a request is pending answers that request. With auto-approve on, it is
   * approved at once.
   */
  async create (input: DeviceRequest, device: DeviceRecord, requestedBy: string): Promise<{ request: RequestRecord, created: boolean }> {
    if (device.status !== 'active') throw new ValidationError(`device ${device.id} is retired`)
    const pkg = await this.resolvePackage(input.package, device, { forDevice: requestedBy === 'device' })
    for await (const existing of this.store.collections.requests.values()) {
      if (existing.deviceId === device.id && existing.packageId === pkg.id && existing.status === 'pending') return { request: existing, created: false }
    }
    const request: RequestRecord = {
      id: randomId('req'),
      packageId: pkg.id,
      packageName: pkg.name,
      packageVersion: pkg.version,
      deviceId: device.id,
      hostname: device.hostname,
      requestedBy,
      status: 'pending',
      createdAt: new Date(this.now()).toISOString()
    }
    if (input.user !== undefined) request.user = input.user
    if (input.reason !== undefined && input.reason !== '') request.reason = input.reason
    await this.store.write([{ type: 'put', collection: 'requests', key: request.id, value: request }])
    this.emit('changed', request)
    if (this.settings.get().autoApproveRequests) return { request: await this.approve(request.id, 'auto-approve'), created: true }
    return { request, created: true }
  }

  /** A request made through the API for a device named by id or host name. */
  async createFor (input: DeviceRequest & { deviceId: string }, requestedBy: string): Promise<{ request: RequestRecord, created: boolean }> {
    // Through the registry of active devices (by id, then host name), not a read of the fleet.
    const registry = this.devices.registry
    const id = registry.get(input.deviceId)?.id ?? [...registry.idsOfHostname(input.deviceId)].sort()[0]
    const device = id === undefined ? undefined : await this.devices.get(id)
    if (device === undefined || device.status !== 'active') throw new NotFoundError('device', input.deviceId)
    const { deviceId: _deviceId, ...request } = input
    return await this.create(request, device, requestedBy)
  }

  async get (id: string): Promise<RequestRecord> {
    const request = await this.store.collections.requests.get(id)
    if (request === undefined) throw new NotFoundError('request', id)
    return request
  }

  async list (filter: { status?: RequestStatus, deviceId?: string } = {}): Promise<RequestRecord[]> {
    const requests = await collect(this.store.collections.requests.values())
    return requests
      .filter(request => (filter.status === undefined || request.status === filter.status) && (filter.deviceId === undefined || request.deviceId === filter.deviceId))
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
  }

  private async decide (id: string, status: 'approved' | 'denied', decidedBy: string, comment: string | undefined, taskId?: string): Promise<RequestRecord> {
    const request = await this.get(id)
    const decided: RequestRecord = { ...request, status, decidedAt: new Date(this.now()).toISOString(), decidedBy }
    if (comment !== undefined && comment !== '') decided.comment = comment
    if (taskId !== undefined) decided.taskId = taskId
    await this.store.write([{ type: 'put', collection: 'requests', key: id, value: decided }])
    this.emit('changed', decided)
    return decided
  }

  private async pending (id: string): Promise<RequestRecord> {
    const request = await this.get(id)
    if (request.status !== 'pending') throw new ConflictError('request-decided', `request ${id} was already ${request.status} by ${request.decidedBy ?? 'someone'}`)
    return request
  }

  /** Approves a pending request and creates its install task for the device. */
  async approve (id: string, decidedBy: string, comment?: string): Promise<RequestRecord> {
    const request = await this.pending(id)
    const { task } = await this.tasks.create({
      packageId: request.packageId,
      action: 'install',
      targets: { deviceIds: [request.deviceId] },
      name: `install ${request.packageName} ${request.packageVersion} for ${request.user ?? request.hostname} (request ${request.id})`
    }, decidedBy, { requestId: request.id })
    return await this.decide(id, 'approved', decidedBy, comment, task.id)
  }

  async deny (id: string, decidedBy: string, comment?: string): Promise<RequestRecord> {
    await this.pending(id)
    return await this.decide(id, 'denied', decidedBy, comment)
  }
}
