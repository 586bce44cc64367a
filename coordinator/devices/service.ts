import { EventEmitter } from 'node:events'
import pLimit from 'p-limit'
import { z } from 'zod'
import {
  ARCHITECTURES, PLATFORMS, peerIdOf, publicKeyFromHex, randomId, randomSecret, type Architecture, type Platform
} from '../../protocol/index.js'
import { hashSecret } from '../auth/tokens.js'
import { ConflictError, NotFoundError, UnauthorizedError } from '../errors.js'
import type { DeviceRecord, DeviceStatus, EnrollmentToken, Store, WriteOperation } from '../store/types.js'
import { collect } from '../store/level-store.js'
import { DEFAULT_SITE, followsAddress, placeDevice } from '../sites/placement.js'

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

export { DEFAULT_SITE }

/** Multiaddr text as an agent reports it; parsed by the agents that dial it. */
const peerAddressSchema = z.string().min(2).max(300).regex(/^\/[\x21-\x7e]+$/, 'must be a multiaddr')

export const selfReportSchema = z.object({
  /** The agent's libp2p addresses; empty when peer sharing is off. */
  peerAddresses: z.array(peerAddressSchema).max(32),
  siteCache: z.boolean().optional(),
  connectedPeers: z.number().int().min(0).max(100_000).optional(),
  cache: z.object({
    usedBytes: z.number().int().min(0),
    limitBytes: z.number().int().min(0),
    pinnedBytes: z.number().int().min(0),
    packages: z.number().int().min(0)
  }).strict().optional(),
  /** The latest clear-cache request the agent carried out. */
  clearedCacheRequest: z.number().int().min(0).optional(),
  /** Whether the agent is its site's status relay now. */
  statusRelay: z.boolean().optional()
}).strict()

export type SelfReport = z.infer<typeof selfReportSchema>

/** What an agent last said about itself that is not worth a durable write. */
interface LiveReport {
  connectedPeers?: number
  statusRelay?: boolean
  cache?: SelfReport['cache']
  reportedAt: string
}

/** How long after its last contact a device still counts as online. */
export const ONLINE_WINDOW_MS = 90_000
/** Contact times are written at most this often per device. */
const LAST_SEEN_WRITE_INTERVAL_MS = 30_000

export interface DeviceView extends DeviceRecord {
  online: boolean
  /** Peers the agent was connected to at its last report. */
  connectedPeers?: number
  cache?: SelfReport['cache']
  /** Whether the agent said at its last report that it relays its site's status records. */
  statusRelay?: boolean
  reportedAt?: string
}

export interface DeviceServiceInit {
  store: Store
  now?: () => number
  /** The site of the first boundary containing an address. */
  siteForAddress?: (address: string | undefined) => string | undefined
}

/** Returns the device if it is active; a blocked or retired device fails as its credential would. */
export function assertActive (device: DeviceRecord): DeviceRecord {
  if (device.status === 'blocked') throw new UnauthorizedError('this device has been blocked', 'device-blocked')
  if (device.status !== 'active') throw new UnauthorizedError('this device has been retired', 'device-retired')
  return device
}

export class DeviceService extends EventEmitter<{ changed: [deviceId: string] }> {
  private readonly store: Store
  private readonly now: () => number
  private readonly lastSeen = new Map<string, { at: number, address?: string, writtenAt: number }>()
  /** Enrollments one at a time: two cannot both take an enrollment token's last use, nor enroll one key twice. */
  private readonly enrollments = pLimit(1)
  /** Changes of one device record one at a time: a contact noted while the device is being blocked cannot write the old status back. */
  private readonly deviceChanges = new Map<string, Promise<unknown>>()
  private readonly live = new Map<string, LiveReport>()
  private readonly siteForAddress: (address: string | undefined) => string | undefined

  constructor (init: DeviceServiceInit) {
    super()
    // Every held assignments request listens here while it waits: as many listeners as devices waiting, not a leak.
    this.setMaxListeners(0)
    this.store = init.store
    this.now = init.now ?? Date.now
    this.siteForAddress = init.siteForAddress ?? (() => undefined)
  }

  async enroll (request: EnrollRequest, address: string | undefined): Promise<{ device: DeviceRecord, credential: string }> {
    return await this.enrollments(async () => await this.enrollNow(request, address))
  }

  private async enrollNow (request: EnrollRequest, address: string | undefined): Promise<{ device: DeviceRecord, credential: string }> {
    const tokenHash = hashSecret(request.token)
    const token = await this.store.collections.enrollmentTokens.get(tokenHash)
    const now = this.now()
    if (token === undefined) throw new UnauthorizedError('the enrollment token is not valid')
    if (token.revokedAt !== undefined) throw new UnauthorizedError('the enrollment token has been revoked', 'enrollment-token-revoked')
    if (token.expiresAt !== undefined && Date.parse(token.expiresAt) <= now) throw new UnauthorizedError('the enrollment token has expired', 'enrollment-token-expired')
    if (token.maxUses !== undefined && token.uses >= token.maxUses) throw new UnauthorizedError('the enrollment token has no uses left', 'enrollment-token-used-up')
    const publicKey = publicKeyFromHex(request.publicKey)
    for await (const existing of this.store.collections.devices.values()) {
      if (existing.publicKey !== request.publicKey) continue
      // A blocked or retired device may not come back under a new id with the same key.
      if (existing.status === 'active') throw new ConflictError('device-key-enrolled', `this device key is already enrolled as ${existing.id}`)
      throw new ConflictError(`device-key-${existing.status}`, `this device key belongs to ${existing.id}, which is ${existing.status}`)
    }
    const credential = randomSecret('mdd')
    const placement = placeDevice(request.site ?? token.site, this.siteForAddress(address))
    const device: DeviceRecord = {
      id: randomId('dev'),
      hostname: request.hostname,
      publicKey: request.publicKey,
      peerId: peerIdOf(publicKey),
      platform: request.platform,
      arch: request.arch,
      site: placement.site,
      siteSource: placement.siteSource,
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
    if (device === undefined) throw new UnauthorizedError('this device has been retired', 'device-retired')
    return assertActive(device)
  }

  /**
   * Blocks, unblocks or retires a device. From the next request on, a device
   * that is not active fails to authenticate (a held assignments request ends
   * too), is no target of any task, and is off the peer allow-list. Retiring
   * is for good: no status change follows it, so the credential never works
   * again (it is kept only to answer `device-retired` rather than a bare 401).
   */
  async setStatus (id: string, status: DeviceStatus, by: string, reason?: string): Promise<DeviceRecord> {
    return await this.changeDevice(id, async () => await this.setStatusNow(id, status, by, reason))
  }

  private async setStatusNow (id: string, status: DeviceStatus, by: string, reason?: string): Promise<DeviceRecord> {
    const device = await this.get(id)
    if (device.status === 'retired') throw new ConflictError('device-retired', `device ${id} is retired; retiring is permanent`)
    if (device.status === status) return device
    const updated: DeviceRecord = { ...device, status, statusChangedAt: new Date(this.now()).toISOString(), statusChangedBy: by }
    if (reason !== undefined) updated.statusReason = reason
    else delete updated.statusReason
    await this.store.write([{ type: 'put', collection: 'devices', key: id, value: updated }])
    this.lastSeen.delete(id)
    this.emit('changed', id)
    return updated
  }

  private async changeDevice<T> (id: string, change: () => Promise<T>): Promise<T> {
    const previous = this.deviceChanges.get(id) ?? Promise.resolve()
    const running = previous.then(change, change)
    const settled = running.catch(() => {})
    this.deviceChanges.set(id, settled)
    void settled.then(() => { if (this.deviceChanges.get(id) === settled) this.deviceChanges.delete(id) })
    return await running
  }

  /**
   * Notes a contact from a device; persisted at most every 30 seconds per
   * device. Without an address the device was heard of through another (its
   * site's relay): its last address stays what it was.
   */
  async touch (device: DeviceRecord, address: string | undefined): Promise<void> {
    const now = this.now()
    const previous = this.lastSeen.get(device.id)
    const writtenAt = previous?.writtenAt ?? (device.lastSeenAt !== undefined ? Date.parse(device.lastSeenAt) : 0)
    const entry: { at: number, address?: string, writtenAt: number } = { at: now, writtenAt }
    const knownAddress = address ?? previous?.address
    if (knownAddress !== undefined) entry.address = knownAddress
    this.lastSeen.set(device.id, entry)
    if (now - writtenAt < LAST_SEEN_WRITE_INTERVAL_MS && (address === undefined || address === device.lastAddress)) return
    entry.writtenAt = now
    await this.changeDevice(device.id, async () => {
      const current = await this.store.collections.devices.get(device.id)
      if (current === undefined) return
      const updated: DeviceRecord = { ...current, lastSeenAt: new Date(now).toISOString() }
      if (address !== undefined) updated.lastAddress = address
      // A device whose site follows its address changes site when it roams.
      const moved = address !== undefined && address !== current.lastAddress && this.replace(updated)
      await this.store.write([{ type: 'put', collection: 'devices', key: device.id, value: updated }])
      if (moved) this.emit('changed', device.id)
    })
  }

  /** Works the site out again from the device's address; returns whether it changed. */
  private replace (device: DeviceRecord): boolean {
    if (!followsAddress(device)) return false
    const placement = placeDevice(undefined, this.siteForAddress(device.lastAddress))
    if (placement.site === device.site && placement.siteSource === device.siteSource) return false
    device.site = placement.site
    device.siteSource = placement.siteSource
    return true
  }

  /** Places every device whose site follows its address again (after a boundary change); returns the ids that moved. */
  async replaceAll (): Promise<string[]> {
    const moved: string[] = []
    for (const device of await this.listActive()) {
      if (!followsAddress(device)) continue
      await this.changeDevice(device.id, async () => {
        const current = await this.store.collections.devices.get(device.id)
        if (current === undefined) return
        const updated = { ...current }
        const address = this.lastSeen.get(device.id)?.address
        if (address !== undefined) updated.lastAddress = address
        if (!this.replace(updated)) return
        await this.store.write([{ type: 'put', collection: 'devices', key: device.id, value: updated }])
        moved.push(device.id)
      })
    }
    for (const id of moved) this.emit('changed', id)
    return moved
  }

  /**
   * Takes an agent's report about itself. Addresses and the site-cache role
   * are stored (and wake its site peers' assignment requests when they
   * change); counters are kept in memory only.
   */
  async report (deviceId: string, report: SelfReport): Promise<void> {
    const live: LiveReport = { reportedAt: new Date(this.now()).toISOString() }
    if (report.connectedPeers !== undefined) live.connectedPeers = report.connectedPeers
    if (report.cache !== undefined) live.cache = report.cache
    if (report.statusRelay !== undefined) live.statusRelay = report.statusRelay
    this.live.set(deviceId, live)
    const changed = await this.changeDevice(deviceId, async () => {
      const current = await this.get(deviceId)
      const addresses = [...new Set(report.peerAddresses)]
      const updated: DeviceRecord = { ...current, peerAddresses: addresses, siteCache: report.siteCache ?? false }
      if (report.clearedCacheRequest !== undefined && report.clearedCacheRequest > (current.cacheClearedRequest ?? 0)) {
        updated.cacheClearedRequest = Math.min(report.clearedCacheRequest, current.clearCacheRequest?.id ?? 0)
      }
      const differs = JSON.stringify(current.peerAddresses ?? []) !== JSON.stringify(addresses) ||
        (current.siteCache ?? false) !== updated.siteCache ||
        current.cacheClearedRequest !== updated.cacheClearedRequest
      if (differs) await this.store.write([{ type: 'put', collection: 'devices', key: deviceId, value: updated }])
      return differs
    })
    if (changed) this.emit('changed', deviceId)
  }

  /** Asks a device to empty its cache of everything no task needs; it does so at its next assignments answer. */
  async requestCacheClear (deviceId: string, requestedBy: string): Promise<DeviceRecord> {
    const updated = await this.changeDevice(deviceId, async () => {
      const current = await this.get(deviceId)
      if (current.status !== 'active') throw new ConflictError(`device-${current.status}`, `device ${deviceId} is ${current.status}`)
      const next: DeviceRecord = {
        ...current,
        clearCacheRequest: { id: (current.clearCacheRequest?.id ?? 0) + 1, requestedAt: new Date(this.now()).toISOString(), requestedBy }
      }
      await this.store.write([{ type: 'put', collection: 'devices', key: deviceId, value: next }])
      return next
    })
    this.emit('changed', deviceId)
    return updated
  }

  view (device: DeviceRecord): DeviceView {
    const seen = this.lastSeen.get(device.id)
    const lastSeenMs = Math.max(seen?.at ?? 0, device.lastSeenAt !== undefined ? Date.parse(device.lastSeenAt) : 0)
    const view: DeviceView = { ...device, online: device.status === 'active' && this.now() - lastSeenMs < ONLINE_WINDOW_MS }
    if (lastSeenMs > 0) view.lastSeenAt = new Date(lastSeenMs).toISOString()
    if (seen?.address !== undefined) view.lastAddress = seen.address
    const live = this.live.get(device.id)
    if (live !== undefined) {
      if (live.connectedPeers !== undefined) view.connectedPeers = live.connectedPeers
      if (live.cache !== undefined) view.cache = live.cache
      if (live.statusRelay !== undefined) view.statusRelay = live.statusRelay
      view.reportedAt = live.reportedAt
    }
    return view
  }

  /** Moves a device to another site or changes its static groups; tasks that target them pick it up. */
  async update (id: string, update: DeviceUpdate): Promise<DeviceRecord> {
    const device = await this.get(id)
    let groups = update.groups ?? device.groups
    if (update.addGroups !== undefined) groups = [...groups, ...update.addGroups]
    if (update.removeGroups !== undefined) groups = groups.filter(group => !update.removeGroups!.includes(group))
    const updated: DeviceRecord = { ...device, site: update.site ?? device.site, groups: [...new Set(groups)] }
    // A site the operator names is declared: it no longer follows the device's address.
    if (update.site !== undefined) updated.siteSource = 'declared'
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
