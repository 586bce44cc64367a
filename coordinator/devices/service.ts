import { EventEmitter } from 'node:events'
import { z } from 'zod'
import {
  ARCHITECTURES, PLATFORMS, peerIdOf, publicKeyFromHex, randomId, randomSecret, type Architecture, type Platform
} from '../../protocol/index.js'
import { hashSecret } from '../auth/tokens.js'
import { ApiError, ConflictError, NotFoundError, UnauthorizedError } from '../errors.js'
import type { DeviceRecord, EnrollmentToken, Store, WriteOperation } from '../store/types.js'
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
  clearedCacheRequest: z.number().int().min(0).optional()
}).strict()

export type SelfReport = z.infer<typeof selfReportSchema>

/** What an agent last said about itself that is not worth a durable write. */
interface LiveReport {
  connectedPeers?: number
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
  reportedAt?: string
}

export interface DeviceServiceInit {
  store: Store
  now?: () => number
  /** The site of the first boundary containing an address. */
  siteForAddress?: (address: string | undefined) => string | undefined
}

export class DeviceService extends EventEmitter<{ changed: [deviceId: string] }> {
  private readonly store: Store
  private readonly now: () => number
  private readonly lastSeen = new Map<string, { at: number, address?: string, writtenAt: number }>()
  private readonly live = new Map<string, LiveReport>()
  /** Read-modify-write of one device record runs one at a time, so concurrent requests lose no field. */
  private readonly locks = new Map<string, Promise<unknown>>()
  private readonly siteForAddress: (address: string | undefined) => string | undefined

  constructor (init: DeviceServiceInit) {
    super()
    this.store = init.store
    this.now = init.now ?? Date.now
    this.siteForAddress = init.siteForAddress ?? (() => undefined)
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
    if (device === undefined || device.status !== 'active') throw new UnauthorizedError('this device is no longer enrolled')
    return device
  }

  private async exclusive<T> (deviceId: string, body: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(deviceId) ?? Promise.resolve()
    const run = previous.then(body, body)
    const settled = run.catch(() => {})
    this.locks.set(deviceId, settled)
    void settled.then(() => { if (this.locks.get(deviceId) === settled) this.locks.delete(deviceId) })
    return await run
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
    await this.exclusive(device.id, async () => {
      const current = await this.store.collections.devices.get(device.id)
      if (current === undefined) return
      const updated: DeviceRecord = { ...current, lastSeenAt: new Date(now).toISOString() }
      if (address !== undefined) updated.lastAddress = address
      // A device whose site follows its address changes site when it roams.
      const moved = address !== current.lastAddress && this.replace(updated)
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
      await this.exclusive(device.id, async () => {
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
    this.live.set(deviceId, live)
    const changed = await this.exclusive(deviceId, async () => {
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
    const updated = await this.exclusive(deviceId, async () => {
      const current = await this.get(deviceId)
      if (current.status !== 'active') throw new ConflictError('device-retired', `device ${deviceId} is not enrolled any more`)
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
      view.reportedAt = live.reportedAt
    }
    return view
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
