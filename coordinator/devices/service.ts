import { EventEmitter } from 'node:events'
import { z } from 'zod'
import {
  ARCHITECTURES, PLATFORMS, peerIdOf, publicKeyFromHex, randomId, randomSecret, type Architecture, type Platform
} from '../../protocol/index.js'
import { hashSecret } from '../auth/tokens.js'
import { ApiError, ConflictError, NotFoundError, UnauthorizedError } from '../errors.js'
import type { DeviceRecord, EnrollmentToken, Store, WriteOperation } from '../store/types.js'
import { collect } from '../store/level-store.js'

export const enrollRequestSchema = z.object({
  token: z.string().min(1).max(200),
  publicKey: z.string().regex(/^[0-9a-f]{64}$/, 'must be a 32-byte ed25519 public key in hex'),
  hostname: z.string().trim().min(1).max(253),
  platform: z.enum(PLATFORMS),
  arch: z.enum(ARCHITECTURES),
  site: z.string().trim().min(1).max(100).optional(),
  groups: z.array(z.string().trim().min(1).max(100)).max(100).optional(),
  agentVersion: z.string().max(50).optional()
}).strict()

export type EnrollRequest = z.infer<typeof enrollRequestSchema>

/** What an operator may change about a device: its site and static groups. */
export const deviceUpdateSchema = z.object({
  site: z.string().trim().min(1).max(100).optional(),
  groups: z.array(z.string().trim().min(1).max(100)).max(100).optional(),
  addGroups: z.array(z.string().trim().min(1).max(100)).max(100).optional(),
  removeGroups: z.array(z.string().trim().min(1).max(100)).max(100).optional()
}).strict().refine(update => Object.keys(update).length > 0, { message: 'name a site or groups to change' })
  .refine(update => update.groups === undefined || (update.addGroups === undefined && update.removeGroups === undefined), { message: 'give groups, or addGroups/removeGroups, not both' })

export type DeviceUpdate = z.infer<typeof deviceUpdateSchema>

export const DEFAULT_SITE = 'default'

/** How long after its last contact a device still counts as online. */
export const ONLINE_WINDOW_MS = 90_000
/** Contact times are written at most this often per device. */
const LAST_SEEN_WRITE_INTERVAL_MS = 30_000

export interface DeviceView extends DeviceRecord {
  online: boolean
}

export class DeviceService extends EventEmitter<{ changed: [deviceId: string] }> {
  private readonly store: Store
  private readonly now: () => number
  private readonly lastSeen = new Map<string, { at: number, address?: string, writtenAt: number }>()

  constructor (init: { store: Store, now?: () => number }) {
    super()
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  async enroll (request: EnrollRequest, address: string | undefined): Promise<{ device: DeviceRecord, credential: string }> {
    const tokenHash = hashSecret(request.token)
    const token = await this.store.collections.enrollmentTokens.get(tokenHash)
    const now = this.now()
    if (token === undefined) throw new UnauthorizedError('the enrollment token is not valid')
    if (token.expiresAt !== undefined && Date.parse(token.expiresAt) <= now) throw new ApiError(401, 'enrollment-token-expired', 'the enrollment token has expired')
    if (token.maxUses !== undefined && token.uses >= token.maxUses) throw new ApiError(401, 'enrollment-token-used-up', 'the enrollment token has no uses left')
    const publicKey = publicKeyFromHex(request.publicKey)
    for await (const existing of this.store.collections.devices.values()) {
      if (existing.publicKey === request.publicKey && existing.status === 'active') {
        throw new ConflictError('device-key-enrolled', `this device key is already enrolled as ${existing.id}`)
      }
    }
    const credential = randomSecret('mdd')
    const device: DeviceRecord = {
      id: randomId('dev'),
      hostname: request.hostname,
      publicKey: request.publicKey,
      peerId: peerIdOf(publicKey),
      platform: request.platform,
      arch: request.arch,
      site: request.site ?? token.site ?? DEFAULT_SITE,
      groups: [...new Set([...(token.groups ?? []), ...(request.groups ?? [])])],
      status: 'active',
      enrolledAt: new Date(now).toISOString(),
      lastSeenAt: new Date(now).toISOString()
    }
    if (address !== undefined) device.lastAddress = address
    if (request.agentVersion !== undefined) device.agentVersion = request.agentVersion
    const usedToken: EnrollmentToken = { ...token, uses: token.uses + 1 }
    const operations: WriteOperation[] = [
      { type: 'put', collection: 'devices', key: device.id, value: device },
      { type: 'put', collection: 'credentials', key: hashSecret(credential), value: { deviceId: device.id, createdAt: device.enrolledAt } },
      { type: 'put', collection: 'enrollmentTokens', key: tokenHash, value: usedToken }
    ]
    await this.store.write(operations)
    this.emit('changed', device.id)
    return { device, credential }
  }

  /** Resolves a device credential; undefined when the secret is not a device credential. */
  async authenticate (secret: string): Promise<DeviceRecord | undefined> {
    const credential = await this.store.collections.credentials.get(hashSecret(secret))
    if (credential === undefined) return undefined
    const device = await this.store.collections.devices.get(credential.deviceId)
    if (device === undefined || device.status !== 'active') throw new UnauthorizedError('this device is no longer enrolled')
    return device
  }

  /** Notes a contact from a device; persisted at most every 30 seconds per device. */
  async touch (device: DeviceRecord, address: string | undefined): Promise<void> {
    const now = this.now()
    const previous = this.lastSeen.get(device.id)
    const writtenAt = previous?.writtenAt ?? (device.lastSeenAt !== undefined ? Date.parse(device.lastSeenAt) : 0)
    const entry: { at: number, address?: string, writtenAt: number } = { at: now, writtenAt }
    if (address !== undefined) entry.address = address
    this.lastSeen.set(device.id, entry)
    if (now - writtenAt < LAST_SEEN_WRITE_INTERVAL_MS && address === device.lastAddress) return
    entry.writtenAt = now
    const current = await this.store.collections.devices.get(device.id)
    if (current === undefined) return
    const updated: DeviceRecord = { ...current, lastSeenAt: new Date(now).toISOString() }
    if (address !== undefined) updated.lastAddress = address
    await this.store.write([{ type: 'put', collection: 'devices', key: device.id, value: updated }])
  }

  view (device: DeviceRecord): DeviceView {
    const seen = this.lastSeen.get(device.id)
    const lastSeenMs = Math.max(seen?.at ?? 0, device.lastSeenAt !== undefined ? Date.parse(device.lastSeenAt) : 0)
    const view: DeviceView = { ...device, online: device.status === 'active' && this.now() - lastSeenMs < ONLINE_WINDOW_MS }
    if (lastSeenMs > 0) view.lastSeenAt = new Date(lastSeenMs).toISOString()
    if (seen?.address !== undefined) view.lastAddress = seen.address
    return view
  }

  /** Moves a device to another site or changes its static groups; tasks that target them pick it up. */
  async update (id: string, update: DeviceUpdate): Promise<DeviceRecord> {
    const device = await this.get(id)
    let groups = update.groups ?? device.groups
    if (update.addGroups !== undefined) groups = [...groups, ...update.addGroups]
    if (update.removeGroups !== undefined) groups = groups.filter(group => !update.removeGroups!.includes(group))
    const updated: DeviceRecord = { ...device, site: update.site ?? device.site, groups: [...new Set(groups)] }
    await this.store.write([{ type: 'put', collection: 'devices', key: id, value: updated }])
    this.emit('changed', id)
    return updated
  }

  async get (id: string): Promise<DeviceRecord> {
    const device = await this.store.collections.devices.get(id)
    if (device === undefined) throw new NotFoundError('device', id)
    return device
  }

  async list (): Promise<DeviceRecord[]> {
    return await collect(this.store.collections.devices.values())
  }

  async listActive (): Promise<DeviceRecord[]> {
    return (await this.list()).filter(device => device.status === 'active')
  }
}

export type { Platform, Architecture }
