import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { z } from 'zod'
import {
  MAX_WINDOWS_PER_DEVICE, WEEKDAYS, calendarDateSchema, occurrencesOf, randomId, signWindowSet, timeOfDaySchema, timeZoneSchema, windowTimesProblems,
  MAX_ONE_OFF_WINDOW_MINUTES, type SignedEnvelope, type SigningKey, type WindowRule
} from '../../protocol/index.js'
import { NotFoundError, ValidationError, ApiError } from '../errors.js'
import type { DeviceRecord, MaintenanceWindowRecord, Store } from '../store/types.js'

/** Windows the organisation may define. */
export const MAX_MAINTENANCE_WINDOWS = 10_000
const REVISION_KEY = 'maintenanceWindows.revision'
/** Signed window sets kept; past it the cache starts again (signing is cheap and deterministic). */
const MAX_CACHED_SETS = 10_000

const names = z.array(z.string().trim().min(1).max(253)).max(1000)

const windowFields = {
  name: z.string().trim().min(1).max(200),
  description: z.string().max(1000),
  /** The devices of these sites. */
  sites: names,
  /** The devices in these groups. */
  groups: names,
  /** These devices, by id or host name. */
  deviceIds: names,
  /** Recurring: the days of the week it opens on (in its zone). */
  days: z.array(z.enum(WEEKDAYS)).min(1).max(7),
  /** One-off: the date it opens on (in its zone). */
  date: calendarDateSchema,
  /** Opening time, HH:MM on a 24-hour clock, in its zone. */
  start: timeOfDaySchema,
  /** How long it stays open; it may reach past midnight. A recurring window lasts a week at most. */
  durationMinutes: z.number().int().min(1).max(MAX_ONE_OFF_WINDOW_MINUTES),
  /** IANA time zone such as Europe/Berlin; absent: each device evaluates it in its own zone. */
  timeZone: timeZoneSchema
}

export const createWindowSchema = z.object({
  name: windowFields.name,
  description: windowFields.description.optional(),
  sites: windowFields.sites.optional(),
  groups: windowFields.groups.optional(),
  deviceIds: windowFields.deviceIds.optional(),
  days: windowFields.days.optional(),
  date: windowFields.date.optional(),
  start: windowFields.start,
  durationMinutes: windowFields.durationMinutes,
  timeZone: windowFields.timeZone.optional()
}).strict()

/** An edit: fields present replace the window's; `null` removes an optional one. */
export const editWindowSchema = z.object({
  name: windowFields.name.optional(),
  description: windowFields.description.nullable().optional(),
  sites: windowFields.sites.nullable().optional(),
  groups: windowFields.groups.nullable().optional(),
  deviceIds: windowFields.deviceIds.nullable().optional(),
  days: windowFields.days.nullable().optional(),
  date: windowFields.date.nullable().optional(),
  start: windowFields.start.optional(),
  durationMinutes: windowFields.durationMinutes.optional(),
  timeZone: windowFields.timeZone.nullable().optional()
}).strict().refine(edit => Object.keys(edit).length > 0, { message: 'name at least one field to change' })

export const windowQuerySchema = z.object({
  site: z.string().max(253).optional(),
  group: z.string().max(253).optional(),
  /** The windows that apply to this device (by id or host name): its own, its site's and its groups'. */
  device: z.string().max(253).optional()
}).strict()

export type CreateWindowRequest = z.infer<typeof createWindowSchema>
export type EditWindowRequest = z.infer<typeof editWindowSchema>

/** Which devices a change of windows concerns. */
export interface WindowScope {
  sites: string[]
  groups: string[]
  deviceIds: string[]
}

export type WindowView = MaintenanceWindowRecord & {
  /** The next three openings (ISO), for windows with a zone of their own; each device's zone decides for the others. */
  nextOpenings?: string[]
}

function scopeOf (records: ReadonlyArray<Pick<MaintenanceWindowRecord, 'sites' | 'groups' | 'deviceIds'>>): WindowScope {
  return {
    sites: [...new Set(records.flatMap(record => record.sites ?? []))],
    groups: [...new Set(records.flatMap(record => record.groups ?? []))],
    deviceIds: [...new Set(records.flatMap(record => record.deviceIds ?? []))]
  }
}

function ruleOf (record: MaintenanceWindowRecord): WindowRule {
  const rule: WindowRule = { id: record.id, name: record.name, start: record.start, durationMinutes: record.durationMinutes }
  if (record.days !== undefined) rule.days = record.days
  if (record.date !== undefined) rule.date = record.date
  if (record.timeZone !== undefined) rule.timeZone = record.timeZone
  return rule
}

function addTo (index: Map<string, Set<string>>, key: string, id: string): void {
  let set = index.get(key)
  if (set === undefined) index.set(key, set = new Set())
  set.add(id)
}

/**
 * Maintenance windows (SCCM's): when the devices of a site, of a group, or
 * single devices may install and reboot. Indexed by site, group and device,
 * so a device's windows cost what they are, not what the organisation has.
 * Each device receives its windows as a set signed by the coordinator.
 */
export class MaintenanceWindowService extends EventEmitter<{ changed: [scope: WindowScope] }> {
  private readonly store: Store
  private readonly now: () => number
  private readonly records = new Map<string, MaintenanceWindowRecord>()
  private readonly bySite = new Map<string, Set<string>>()
  private readonly byGroup = new Map<string, Set<string>>()
  /** By device id and by lower-case host name. */
  private readonly byDevice = new Map<string, Set<string>>()
  private revision = 0
  private revisedAt = new Date(0).toISOString()
  private readonly signed = new Map<string, SignedEnvelope>()

  constructor (init: { store: Store, now?: () => number }) {
    super()
    this.setMaxListeners(0)
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  async open (): Promise<void> {
    for await (const record of this.store.collections.maintenanceWindows.values()) this.records.set(record.id, record)
    const stored = await this.store.collections.meta.get(REVISION_KEY) as { revision: number, at: string } | undefined
    if (stored !== undefined) {
      this.revision = stored.revision
      this.revisedAt = stored.at
    }
    this.reindex()
  }

  /** Reads the windows again after another coordinator changed them; wakes the devices of the windows before and after. */
  async reload (): Promise<void> {
    const before = [...this.records.values()]
    this.records.clear()
    this.signed.clear()
    await this.open()
    this.emit('changed', scopeOf([...before, ...this.records.values()]))
  }

  private reindex (): void {
    this.bySite.clear()
    this.byGroup.clear()
    this.byDevice.clear()
    for (const record of this.records.values()) {
      for (const site of record.sites ?? []) addTo(this.bySite, site, record.id)
      for (const group of record.groups ?? []) addTo(this.byGroup, group, record.id)
      for (const device of record.deviceIds ?? []) addTo(this.byDevice, device.toLowerCase(), record.id)
    }
  }

  /** Checks a window's scope and times together. */
  private check (record: MaintenanceWindowRecord): void {
    if ((record.sites?.length ?? 0) + (record.groups?.length ?? 0) + (record.deviceIds?.length ?? 0) === 0) {
      throw new ValidationError('a maintenance window applies to sites, groups or devices: name at least one', [{ path: 'sites', message: 'name sites, groups or deviceIds' }])
    }
    const problems = windowTimesProblems(record)
    if (problems.length > 0) throw new ValidationError(problems.map(problem => problem.message).join('; '), problems)
  }

  private async commit (put: MaintenanceWindowRecord | undefined, removed: MaintenanceWindowRecord | undefined): Promise<void> {
    const revision = this.revision + 1
    const at = new Date(this.now()).toISOString()
    await this.store.write([
      put !== undefined
        ? { type: 'put', collection: 'maintenanceWindows', key: put.id, value: put }
        : { type: 'del', collection: 'maintenanceWindows', key: removed!.id },
      { type: 'put', collection: 'meta', key: REVISION_KEY, value: { revision, at } }
    ])
    this.revision = revision
    this.revisedAt = at
    if (put !== undefined) this.records.set(put.id, put)
    else this.records.delete(removed!.id)
    this.reindex()
    this.emit('changed', scopeOf([put, removed].filter(record => record !== undefined)))
  }

  async create (request: CreateWindowRequest, by: string): Promise<MaintenanceWindowRecord> {
    if (this.records.size >= MAX_MAINTENANCE_WINDOWS) throw new ApiError(409, 'too-many-windows', `the organisation has ${MAX_MAINTENANCE_WINDOWS} maintenance windows, the most it may have; remove some first`)
    const at = new Date(this.now()).toISOString()
    const record: MaintenanceWindowRecord = { id: randomId('mw'), ...request, createdAt: at, createdBy: by, updatedAt: at, updatedBy: by }
    for (const field of ['sites', 'groups', 'deviceIds'] as const) if (record[field]?.length === 0) delete record[field]
    this.check(record)
    await this.commit(record, undefined)
    return record
  }

  get (id: string): MaintenanceWindowRecord {
    const record = this.records.get(id)
    if (record === undefined) throw new NotFoundError('maintenance window', id)
    return record
  }

  async edit (id: string, edit: EditWindowRequest, by: string): Promise<MaintenanceWindowRecord> {
    const previous = this.get(id)
    const next: MaintenanceWindowRecord = { ...previous, updatedAt: new Date(this.now()).toISOString(), updatedBy: by }
    for (const [field, value] of Object.entries(edit) as Array<[keyof EditWindowRequest, unknown]>) {
      if (value === null) delete (next as unknown as Record<string, unknown>)[field]
      else if (value !== undefined) (next as unknown as Record<string, unknown>)[field] = value
    }
    // Giving a date makes the window one-off, giving days makes it recurring.
    if (edit.date !== undefined && edit.date !== null && edit.days === undefined) delete next.days
    if (edit.days !== undefined && edit.days !== null && edit.date === undefined) delete next.date
    for (const field of ['sites', 'groups', 'deviceIds'] as const) if (next[field]?.length === 0) delete next[field]
    this.check(next)
    const revision = this.revision
    await this.commit(next, undefined)
    // Devices that the window no longer concerns must hear of it too.
    if (this.revision === revision + 1) this.emit('changed', scopeOf([previous]))
    return next
  }

  async delete (id: string): Promise<MaintenanceWindowRecord> {
    const record = this.get(id)
    await this.commit(undefined, record)
    return record
  }

  /** Windows by the filter: of a site, of a group, or those that apply to a device. */
  list (filter: { site?: string, group?: string, device?: DeviceRecord } = {}): MaintenanceWindowRecord[] {
    let ids: Iterable<string> = this.records.keys()
    if (filter.device !== undefined) ids = this.idsFor(filter.device)
    const out = [...ids].map(id => this.records.get(id)!).filter(record =>
      (filter.site === undefined || (record.sites ?? []).includes(filter.site)) &&
      (filter.group === undefined || (record.groups ?? []).includes(filter.group)))
    return out.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id))
  }

  view (record: MaintenanceWindowRecord): WindowView {
    if (record.timeZone === undefined) return { ...record }
    const now = this.now()
    // A recurring window opens within a week; a one-off one once, however far ahead.
    const horizonMs = record.date !== undefined ? 10 * 366 * 24 * 3600_000 : 15 * 24 * 3600_000
    const openings = occurrencesOf(ruleOf(record), now, now + horizonMs, record.timeZone)
      .filter(interval => interval.startMs >= now)
      .slice(0, 3)
      .map(interval => new Date(interval.startMs).toISOString())
    return { ...record, nextOpenings: openings }
  }

  private idsFor (device: Pick<DeviceRecord, 'id' | 'hostname' | 'site' | 'groups'>): Set<string> {
    const ids = new Set<string>()
    for (const id of this.bySite.get(device.site) ?? []) ids.add(id)
    for (const group of device.groups) for (const id of this.byGroup.get(group) ?? []) ids.add(id)
    for (const key of [device.id.toLowerCase(), device.hostname.toLowerCase()]) for (const id of this.byDevice.get(key) ?? []) ids.add(id)
    return ids
  }

  /** The window rules that apply to a device, oldest first (at most MAX_WINDOWS_PER_DEVICE). */
  rulesFor (device: Pick<DeviceRecord, 'id' | 'hostname' | 'site' | 'groups'>): WindowRule[] {
    return [...this.idsFor(device)].map(id => this.records.get(id)!)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
      .slice(0, MAX_WINDOWS_PER_DEVICE)
      .map(ruleOf)
  }

  /** Whether a change of this scope concerns the device. */
  concerns (scope: WindowScope, device: Pick<DeviceRecord, 'id' | 'hostname' | 'site' | 'groups'>): boolean {
    return scope.sites.includes(device.site) ||
      scope.groups.some(group => device.groups.includes(group)) ||
      scope.deviceIds.some(id => id.toLowerCase() === device.id.toLowerCase() || id.toLowerCase() === device.hostname.toLowerCase())
  }

  /** The device's windows, signed; devices with the same windows share one envelope. */
  signedSetFor (device: Pick<DeviceRecord, 'id' | 'hostname' | 'site' | 'groups'>, key: SigningKey & { keyId: string }): SignedEnvelope {
    const windows = this.rulesFor(device)
    const digest = createHash('sha256').update(JSON.stringify(windows)).digest('hex')
    const cacheKey = `${key.keyId}:${this.revision}:${digest}`
    let envelope = this.signed.get(cacheKey)
    if (envelope === undefined) {
      envelope = signWindowSet({ type: 'meshdeploy.maintenance-windows', revision: this.revision, issuedAt: this.revisedAt, windows }, key)
      if (this.signed.size >= MAX_CACHED_SETS) this.signed.clear()
      this.signed.set(cacheKey, envelope)
    }
    return envelope
  }

  /** Grows with every change of any window. */
  get currentRevision (): number {
    return this.revision
  }
}
