import { EventEmitter } from 'node:events'
import pLimit from 'p-limit'
import { z } from 'zod'
import {
  ARCHITECTURES, PLATFORMS, peerIdOf, publicKeyFromHex, randomId, randomSecret, type Architecture, type Platform
} from '../../protocol/index.js'
import { hashSecret } from '../auth/tokens.js'
import { ApiError, ConflictError, NotFoundError, UnauthorizedError } from '../errors.js'
import { DEVICE_STATUSES, InvalidCursorError, type DeviceRecord, type DeviceStatus, type EnrollmentToken, type PageOptions, type Store, type WriteOperation } from '../store/types.js'
import { DEFAULT_PAGE_LIMIT, InvalidListingCursorError, MAX_SCANNED_PER_PAGE, decodeListingCursor, encodeListingCursor, pageQueryShape } from '../listing.js'
import { collect } from '../store/level-store.js'
import { DEFAULT_SITE, followsAddress, placeDevice } from '../sites/placement.js'
import { acceptPeerAddresses, type RefusedPeerAddress } from './peer-addresses.js'
import { label } from '../../protocol/text.js'
import { DeviceRegistry } from './registry.js'
import { CredentialSessions, type CredentialSessionsInit, type SessionSighting, type SharedCredentialFinding } from './credential-sessions.js'

export const enrollRequestSchema = z.object({
  token: z.string().min(1).max(200),
  publicKey: z.string().regex(/^[0-9a-f]{64}$/, 'must be a 32-byte ed25519 public key in hex'),
  hostname: label(z.string().trim().min(1).max(253)),
  platform: z.enum(PLATFORMS),
  arch: z.enum(ARCHITECTURES),
  site: label(z.string().trim().min(1).max(100)).optional(),
  groups: z.array(label(z.string().trim().min(1).max(100))).max(100).optional(),
  agentVersion: label(z.string().max(50)).optional()
}).strict()

export type EnrollRequest = z.infer<typeof enrollRequestSchema>

/** What an operator may change about a device: its site and static groups. */
export const deviceUpdateSchema = z.object({
  site: label(z.string().trim().min(1).max(100)).optional(),
  groups: z.array(label(z.string().trim().min(1).max(100))).max(100).optional(),
  addGroups: z.array(label(z.string().trim().min(1).max(100))).max(100).optional(),
  removeGroups: z.array(label(z.string().trim().min(1).max(100))).max(100).optional(),
  /** Grants (true) or withdraws (false) the site-cache role: the device is handed its site's packages to prefetch, and the origin serves it their chunks. */
  siteCache: z.boolean().optional(),
  /** true: clears the warning that the device's credential is used by two agents at once (once the copy is gone). */
  clearSharedCredential: z.boolean().optional()
}).strict().refine(update => Object.keys(update).length > 0, { message: 'name a site, groups, the site-cache role or clearSharedCredential' })
  .refine(update => update.groups === undefined || (update.addGroups === undefined && update.removeGroups === undefined), { message: 'give groups, or addGroups/removeGroups, not both' })

export type DeviceUpdate = z.infer<typeof deviceUpdateSchema>

/** GET /v1/devices: a page in device id order, optionally of one status and one site. */
export const deviceListQuerySchema = z.object({
  ...pageQueryShape,
  /** Only devices with this status. */
  status: z.enum(DEVICE_STATUSES as [DeviceStatus, ...DeviceStatus[]]).optional(),
  /** Only devices of this site. */
  site: z.string().trim().min(1).max(100).optional()
}).strict()

export type DeviceListQuery = z.infer<typeof deviceListQuerySchema>

export interface DevicePage {
  devices: DeviceRecord[]
  /** Pass as `cursor` for the next page; absent on the last. A page may hold fewer devices than asked and still have one. */
  nextCursor?: string
  /** How many devices the filters select in all, where the store counts it (no filter, or one). */
  total?: number
}

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
  /** Whether an address lies inside one of a site's boundaries. @default never */
  addressInSite?: (site: string, address: string) => boolean
  /** How two agents sharing one credential are told apart (the clock is the service's). */
  sessions?: Omit<CredentialSessionsInit, 'now'>
}

/** What the coordinator kept of an agent's report: the addresses it hands the device's site peers, and those it refused with why. */
export interface SelfReportAnswer {
  peerAddresses: string[]
  refusedAddresses: RefusedPeerAddress[]
}

/**
 * An enrollment token's site and groups bind: a device may not name another
 * site than the one its token presets, nor put itself in groups the token
 * does not grant (it gets exactly the token's groups; operators change them
 * afterwards).
 */
export function checkEnrollmentPresets (request: Pick<EnrollRequest, 'site' | 'groups'>, token: Pick<EnrollmentToken, 'site' | 'groups'>): void {
  if (token.site !== undefined && request.site !== undefined && request.site !== token.site) {
    throw new ApiError(403, 'enrollment-site-mismatch', `the enrollment token places devices in site ${token.site}; this device asked for ${request.site}`)
  }
  const granted = new Set(token.groups ?? [])
  const extra = (request.groups ?? []).filter(group => !granted.has(group))
  if (extra.length > 0) {
    const grants = granted.size > 0 ? `grants only ${[...granted].join(', ')}` : 'grants no groups'
    throw new ApiError(403, 'enrollment-groups-not-granted', `the enrollment token ${grants}; this device asked for ${extra.slice(0, 10).join(', ')} as well (an operator adds devices to groups)`)
  }
}

/** Returns the device if it is active; a blocked or retired device fails as its credential would. */
export function assertActive (device: DeviceRecord): DeviceRecord {
  if (device.status === 'blocked') throw new UnauthorizedError('this device has been blocked', 'device-blocked')
  if (device.status !== 'active') throw new UnauthorizedError('this device has been retired', 'device-retired')
  return device
}

export class DeviceService extends EventEmitter<{ changed: [deviceId: string, origin?: 'remote'] }> {
  /** The active devices in memory by site: site samples and target checks without reading the fleet. */
  readonly registry = new DeviceRegistry()
  private readonly store: Store
  private readonly now: () => number
  private readonly lastSeen = new Map<string, { at: number, address?: string, writtenAt: number }>()
  /** Enrollment checks one at a time: two cannot both take an enrollment token's last use, nor enroll one key twice. */
  private readonly enrollments = pLimit(1)
  /** Uses of enrollment tokens taken by enrollments whose writes are under way. */
  private readonly tokenUses = new Map<string, { uses: number, inFlight: number }>()
  /** Device keys of enrollments whose writes are under way. */
  private readonly enrollingKeys = new Set<string>()
  /** Changes of one device record one at a time: a contact noted while the device is being blocked cannot write the old status back. */
  private readonly deviceChanges = new Map<string, Promise<unknown>>()
  private readonly live = new Map<string, LiveReport>()
  private readonly siteForAddress: (address: string | undefined) => string | undefined
  private readonly addressInSite: (site: string, address: string) => boolean
  /** Who uses each device credential right now: two agents taking turns with one is a copied agent.json. */
  private readonly sessions: CredentialSessions

  constructor (init: DeviceServiceInit) {
    super()
    this.store = init.store
    this.now = init.now ?? Date.now
    this.sessions = new CredentialSessions({ ...init.sessions, now: this.now })
    this.siteForAddress = init.siteForAddress ?? (() => undefined)
    this.addressInSite = init.addressInSite ?? (() => false)
  }

  /** Fills the registry: one pass over the devices at start-up. */
  async open (): Promise<void> {
    for await (const device of this.store.collections.devices.values()) this.registry.load(device)
  }

  /** Writes device records and keeps the registry in step. */
  private async writeDevice (device: DeviceRecord, extra: WriteOperation[] = []): Promise<void> {
    await this.store.write([{ type: 'put', collection: 'devices', key: device.id, value: device }, ...extra])
    this.registry.put(device)
  }

  /**
   * Enrolls a device. The checks run one enrollment at a time against what
   * is stored and what enrollments under way have reserved (a token's uses,
   * device keys); the durable writes of concurrent enrollments then share
   * the store's group commits.
   */
  async enroll (request: EnrollRequest, address: string | undefined): Promise<{ device: DeviceRecord, credential: string }> {
    const reserved = await this.enrollments(async () => await this.reserveEnrollment(request, address))
    const tokenUses = this.tokenUses.get(reserved.tokenHash)!
    try {
      await this.writeDevice(reserved.device, reserved.operations)
    } catch (error) {
      tokenUses.uses--
      throw error
    } finally {
      this.enrollingKeys.delete(reserved.device.publicKey)
      if (--tokenUses.inFlight === 0) this.tokenUses.delete(reserved.tokenHash)
    }
    this.emit('changed', reserved.device.id)
    return { device: reserved.device, credential: reserved.credential }
  }

  private async reserveEnrollment (request: EnrollRequest, address: string | undefined): Promise<{ device: DeviceRecord, credential: string, tokenHash: string, operations: WriteOperation[] }> {
    const tokenHash = hashSecret(request.token)
    // Read before the stored token: an enrollment whose write ends while the token is read drops its reservation, and the token read may not show its use yet.
    const reservedBefore = this.tokenUses.get(tokenHash)?.uses ?? 0
    const token = await this.store.collections.enrollmentTokens.get(tokenHash)
    const now = this.now()
    if (token === undefined) throw new UnauthorizedError('the enrollment token is not valid')
    if (token.revokedAt !== undefined) throw new UnauthorizedError('the enrollment token has been revoked', 'enrollment-token-revoked')
    if (token.expiresAt !== undefined && Date.parse(token.expiresAt) <= now) throw new UnauthorizedError('the enrollment token has expired', 'enrollment-token-expired')
    const usesNow = (): number => Math.max(token.uses, reservedBefore, this.tokenUses.get(tokenHash)?.uses ?? 0)
    if (token.maxUses !== undefined && usesNow() >= token.maxUses) throw new UnauthorizedError('the enrollment token has no uses left', 'enrollment-token-used-up')
    checkEnrollmentPresets(request, token)
    const publicKey = publicKeyFromHex(request.publicKey)
    if (this.enrollingKeys.has(request.publicKey)) throw new ConflictError('device-key-enrolled', 'this device key is being enrolled already')
    const sameKey = await this.store.collections.devices.page({ index: { name: 'publicKey', term: request.publicKey }, limit: 10 })
    for (const { value: existing } of sameKey.items) {
      // A blocked or retired device may not come back under a new id with the same key.
      if (existing.status === 'active') throw new ConflictError('device-key-enrolled', `this device key is already enrolled as ${existing.id}`)
      throw new ConflictError(`device-key-${existing.status}`, `this device key belongs to ${existing.id}, which is ${existing.status}`)
    }
    const credential = randomSecret('mdd')
    const placement = placeDevice(token.site ?? request.site, this.siteForAddress(address))
    const device: DeviceRecord = {
      id: randomId('dev'),
      hostname: request.hostname,
      publicKey: request.publicKey,
      peerId: peerIdOf(publicKey),
      platform: request.platform,
      arch: request.arch,
      site: placement.site,
      siteSource: placement.siteSource,
      groups: [...new Set(token.groups ?? [])],
      status: 'active',
      enrolledAt: new Date(now).toISOString(),
      lastSeenAt: new Date(now).toISOString()
    }
    if (address !== undefined) device.lastAddress = address
    if (request.agentVersion !== undefined) device.agentVersion = request.agentVersion
    // From here to the reservation nothing waits: the count checked is the count reserved.
    const uses = usesNow()
    if (token.maxUses !== undefined && uses >= token.maxUses) throw new UnauthorizedError('the enrollment token has no uses left', 'enrollment-token-used-up')
    // Writes go out in the order reserved (group commits keep it), so the last stored count is the highest.
    const usedToken: EnrollmentToken = { ...token, uses: uses + 1, lastDeviceId: device.id }
    const reservation = this.tokenUses.get(tokenHash)
    if (reservation !== undefined) {
      reservation.uses = uses + 1
      reservation.inFlight++
    } else {
      this.tokenUses.set(tokenHash, { uses: uses + 1, inFlight: 1 })
    }
    this.enrollingKeys.add(request.publicKey)
    return {
      device,
      credential,
      tokenHash,
      operations: [
        { type: 'put', collection: 'credentials', key: hashSecret(credential), value: { deviceId: device.id, createdAt: device.enrolledAt } },
        { type: 'put', collection: 'enrollmentTokens', key: tokenHash, value: usedToken }
      ]
    }
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
    if (status !== 'active') delete updated.sharedCredential
    await this.writeDevice(updated)
    this.lastSeen.delete(id)
    this.sessions.forget(id)
    this.emit('changed', id)
    return updated
  }

  /**
   * Notes which agent session a device request came from. When two sessions
   * take turns with one credential, the device is flagged (durably, once per
   * window) and the finding answered for the log.
   */
  async noteSession (device: DeviceRecord, sighting: SessionSighting): Promise<SharedCredentialFinding | undefined> {
    return await this.flagShared(this.sessions.note(device.id, sighting))
  }

  /** Notes that a device signed a status record differing from the one stored under its (task, attempt, seq). */
  async noteConflictingRecord (deviceId: string): Promise<SharedCredentialFinding | undefined> {
    return await this.flagShared(this.sessions.noteConflict(deviceId))
  }

  private async flagShared (finding: SharedCredentialFinding | undefined): Promise<SharedCredentialFinding | undefined> {
    if (finding === undefined) return undefined
    const id = finding.deviceId
    const flagged = await this.changeDevice(id, async () => {
      const current = await this.store.collections.devices.get(id)
      if (current === undefined || current.status !== 'active') return false
      const at = new Date(finding.detectedAt).toISOString()
      const before = current.sharedCredential
      await this.writeDevice({
        ...current,
        sharedCredential: {
          detectedAt: before?.detectedAt ?? at,
          lastDetectedAt: at,
          sessions: finding.sessions,
          addresses: finding.addresses.length > 0 ? finding.addresses.slice(0, 8) : (before?.addresses ?? []),
          evidence: [...new Set([...(before?.evidence ?? []), finding.evidence])]
        }
      })
      return true
    })
    if (!flagged) return undefined
    this.emit('changed', id)
    return finding
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
      await this.writeDevice(updated)
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
        await this.writeDevice(updated)
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
  async report (deviceId: string, report: SelfReport, observedAddress?: string): Promise<SelfReportAnswer> {
    const live: LiveReport = { reportedAt: new Date(this.now()).toISOString() }
    if (report.connectedPeers !== undefined) live.connectedPeers = report.connectedPeers
    if (report.cache !== undefined) live.cache = report.cache
    if (report.statusRelay !== undefined) live.statusRelay = report.statusRelay
    this.live.set(deviceId, live)
    let answer!: SelfReportAnswer
    const changed = await this.changeDevice(deviceId, async () => {
      const current = await this.get(deviceId)
      const { accepted, refused } = acceptPeerAddresses(report.peerAddresses, {
        ...(observedAddress !== undefined ? { observedAddress } : {}),
        inSite: address => this.addressInSite(current.site, address)
      })
      answer = { peerAddresses: accepted, refusedAddresses: refused }
      // The agent offers to be a site cache; only an operator's grant makes it one.
      const updated: DeviceRecord = { ...current, peerAddresses: accepted, siteCacheOffered: report.siteCache ?? false }
      if (updated.siteCache === true && updated.siteCacheGrantedBy === undefined) delete updated.siteCache
      if (report.clearedCacheRequest !== undefined && report.clearedCacheRequest > (current.cacheClearedRequest ?? 0)) {
        updated.cacheClearedRequest = Math.min(report.clearedCacheRequest, current.clearCacheRequest?.id ?? 0)
      }
      const differs = JSON.stringify(current.peerAddresses ?? []) !== JSON.stringify(accepted) ||
        (current.siteCacheOffered ?? false) !== updated.siteCacheOffered ||
        current.siteCache !== updated.siteCache ||
        current.cacheClearedRequest !== updated.cacheClearedRequest
      if (differs) await this.writeDevice(updated)
      return differs
    })
    if (changed) this.emit('changed', deviceId)
    return answer
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
      await this.writeDevice(next)
      return next
    })
    this.emit('changed', deviceId)
    return updated
  }

  /** When the device was last heard from since this coordinator started (ms), or 0. */
  lastContactMs (deviceId: string): number {
    return this.lastSeen.get(deviceId)?.at ?? 0
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

  /**
   * Moves a device to another site, changes its static groups (tasks that
   * target them pick it up), or grants or withdraws the site-cache role.
   */
  async update (id: string, update: DeviceUpdate, by = 'operator'): Promise<DeviceRecord> {
    const updated = await this.changeDevice(id, async () => {
      const device = await this.get(id)
      let groups = update.groups ?? device.groups
      if (update.addGroups !== undefined) groups = [...groups, ...update.addGroups]
      if (update.removeGroups !== undefined) groups = groups.filter(group => !update.removeGroups!.includes(group))
      const next: DeviceRecord = { ...device, site: update.site ?? device.site, groups: [...new Set(groups)] }
      // A site the operator names is declared: it no longer follows the device's address.
      if (update.site !== undefined) next.siteSource = 'declared'
      if (update.siteCache === true && next.siteCacheGrantedBy === undefined) {
        Object.assign(next, { siteCache: true, siteCacheGrantedAt: new Date(this.now()).toISOString(), siteCacheGrantedBy: by })
      } else if (update.siteCache === false) {
        delete next.siteCache
        delete next.siteCacheGrantedAt
        delete next.siteCacheGrantedBy
      }
      if (update.clearSharedCredential === true) {
        delete next.sharedCredential
        this.sessions.forget(id)
      }
      await this.writeDevice(next)
      return next
    })
    this.emit('changed', id)
    return updated
  }

  async get (id: string): Promise<DeviceRecord> {
    const device = await this.store.collections.devices.get(id)
    if (device === undefined) throw new NotFoundError('device', id)
    return device
  }

  /**
   * One page of devices in id order, through the store's status or site
   * index when filtered: the cost follows the page, not the fleet. With both
   * filters the site's devices are read and the status checked here; at most
   * MAX_SCANNED_PER_PAGE are looked at per request.
   */
  async page (query: DeviceListQuery = {}): Promise<DevicePage> {
    const limit = query.limit ?? DEFAULT_PAGE_LIMIT
    const filters = { status: query.status, site: query.site }
    let storeCursor = query.cursor !== undefined ? decodeListingCursor(query.cursor, 'devices', filters) : undefined
    const collection = this.store.collections.devices
    const base: PageOptions = query.site !== undefined
      ? { index: { name: 'site', term: query.site } }
      : query.status !== undefined ? { index: { name: 'status', term: query.status } } : {}
    const devices: DeviceRecord[] = []
    let scanned = 0
    let first = true
    while (first || (devices.length < limit && storeCursor !== undefined && scanned < MAX_SCANNED_PER_PAGE)) {
      first = false
      let page
      try {
        page = await collection.page({ ...base, limit: limit - devices.length, ...(storeCursor !== undefined ? { cursor: storeCursor } : {}) })
      } catch (error) {
        if (error instanceof InvalidCursorError) throw new InvalidListingCursorError('devices')
        throw error
      }
      scanned += page.items.length
      for (const { value } of page.items) if (query.status === undefined || value.status === query.status) devices.push(value)
      storeCursor = page.cursor
    }
    const result: DevicePage = { devices }
    if (storeCursor !== undefined) result.nextCursor = encodeListingCursor('devices', filters, storeCursor)
    if (query.site !== undefined && query.status === undefined) result.total = await collection.count({ name: 'site', term: query.site })
    else if (query.site === undefined && query.status !== undefined) result.total = await collection.count({ name: 'status', term: query.status })
    else if (query.site === undefined) {
      const counts = await Promise.all(DEVICE_STATUSES.map(async status => await collection.count({ name: 'status', term: status })))
      result.total = counts.reduce((sum, count) => sum + count, 0)
    }
    return result
  }

  /**
   * Devices by status (the store's index counts) and how many active ones
   * are online (from what is in memory): for metrics, without reading every
   * device record.
   */
  async statusCounts (): Promise<Array<{ status: DeviceStatus, count: number, online: number }>> {
    const counts = await Promise.all(DEVICE_STATUSES.map(async status => await this.store.collections.devices.count({ name: 'status', term: status })))
    const since = this.now() - ONLINE_WINDOW_MS
    let online = 0
    for (const device of this.registry.all()) {
      if (Math.max(this.lastSeen.get(device.id)?.at ?? 0, device.lastSeenAtMs) > since) online++
    }
    return DEVICE_STATUSES.map((status, index) => ({ status, count: counts[index], online: status === 'active' ? Math.min(online, counts[index]) : 0 }))
  }

  async list (): Promise<DeviceRecord[]> {
    return await collect(this.store.collections.devices.values())
  }

  async listActive (): Promise<DeviceRecord[]> {
    return (await this.list()).filter(device => device.status === 'active')
  }
}

export type { Platform, Architecture }
