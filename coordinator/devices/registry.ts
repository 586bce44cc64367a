import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { DeviceRecord } from '../store/types.js'

/** Peers of its site an assignments answer names at most. */
export const DEFAULT_SITE_SAMPLE_SIZE = 32
/** Candidates looked at beyond the sample, so that online peers can be preferred. */
const SAMPLE_LOOKAHEAD = 2
/** How often a device's sample moves on to other peers of its site. @default one hour */
export const DEFAULT_SAMPLE_ROTATION_MS = 3_600_000

/** What an answer needs of an active device: where it is and how its site peers reach it. */
export interface RegisteredDevice {
  id: string
  hostname: string
  peerId: string
  site: string
  groups: readonly string[]
  addresses: readonly string[]
  siteCache: boolean
  /** The device's place on its site's ring of samples: a hash of its id, computed once. */
  position: string
  /** The last contact its record holds (written now and then), ms; 0 when never. */
  lastSeenAtMs: number
}

interface SiteEntry {
  /** Active devices of the site by id. */
  devices: Map<string, RegisteredDevice>
  /** Devices with addresses, ordered by a stable hash of their id; rebuilt when a sample is asked for after a change. */
  ring?: Array<{ position: string, device: RegisteredDevice }>
  /** How many devices of the site have addresses. */
  addressed: number
  /** How many devices of the site are in each group. */
  groups: Map<string, number>
  /** The site's devices with the site-cache role. */
  caches: Map<string, RegisteredDevice>
}

function positionOf (value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 16)
}

function registered (device: DeviceRecord): RegisteredDevice {
  return {
    id: device.id,
    hostname: device.hostname,
    peerId: device.peerId,
    site: device.site,
    groups: [...new Set(device.groups)],
    addresses: device.peerAddresses ?? [],
    siteCache: device.siteCache === true,
    position: positionOf(device.id),
    lastSeenAtMs: device.lastSeenAt !== undefined ? Date.parse(device.lastSeenAt) : 0
  }
}

export interface SiteSampleOptions {
  /** @default DEFAULT_SITE_SAMPLE_SIZE */
  size?: number
  /** Whether a peer was heard from recently; online peers go first. @default every peer counts as online */
  isOnline?: (deviceId: string) => boolean
  /** Which rotation of the sample: the same epoch gives the same sample while the site does not change. @default 0 */
  epoch?: number
}

/** Ids are ASCII: plain comparison, without the cost of a locale's collation. */
function byId (a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

function membershipChanged (previous: RegisteredDevice | undefined, next: RegisteredDevice | undefined): boolean {
  if (previous === undefined || next === undefined) return previous !== next
  return previous.site !== next.site || previous.hostname !== next.hostname || previous.groups.join('\n') !== next.groups.join('\n')
}

/**
 * The active devices, in memory, by site: what an assignments answer needs
 * of a device's site (a bounded sample of peers, its caches, whether a group
 * has members there) without reading the fleet. Kept in step by the device
 * service with every write it makes; filled once at start-up.
 */
export class DeviceRegistry extends EventEmitter<{ changed: [previous: RegisteredDevice | undefined, next: RegisteredDevice | undefined] }> {
  private readonly devices = new Map<string, RegisteredDevice>()
  private readonly sites = new Map<string, SiteEntry>()
  private readonly byHostname = new Map<string, Set<string>>()
  private readonly byGroup = new Map<string, Set<string>>()
  /** Grows whenever what the site's samples are drawn from changes. */
  private readonly siteVersions = new Map<string, number>()
  private membershipVersion_ = 0

  get size (): number {
    return this.devices.size
  }

  get (id: string): RegisteredDevice | undefined {
    return this.devices.get(id)
  }

  /** Loads a device at start-up, without announcing it. */
  load (device: DeviceRecord): void {
    this.removeQuietly(device.id)
    if (device.status === 'active') this.insert(registered(device))
  }

  /** Takes a device as written (a device that is not active leaves); announces what changed for its site peers. */
  put (device: DeviceRecord): void {
    const previous = this.removeQuietly(device.id)
    const next = device.status === 'active' ? registered(device) : undefined
    if (next !== undefined) this.insert(next)
    if (previous !== undefined && (next === undefined || sampleChanged(previous, next))) this.bumpSite(previous.site)
    if (next !== undefined && (previous === undefined || sampleChanged(previous, next))) this.bumpSite(next.site)
    if (membershipChanged(previous, next)) this.membershipVersion_++
    this.emit('changed', previous, next)
  }

  /**
   * Grows whenever a device joins or leaves, or changes site, groups or host
   * name: what targets resolve to may have changed (addresses do not count).
   */
  get membershipVersion (): number {
    return this.membershipVersion_
  }

  /** The version of what the site's samples are drawn from. */
  siteVersion (site: string): number {
    return this.siteVersions.get(site) ?? 0
  }

  private bumpSite (site: string): void {
    this.siteVersions.set(site, (this.siteVersions.get(site) ?? 0) + 1)
  }

  private insert (entry: RegisteredDevice): void {
    this.devices.set(entry.id, entry)
    let site = this.sites.get(entry.site)
    if (site === undefined) this.sites.set(entry.site, site = { devices: new Map(), groups: new Map(), caches: new Map(), addressed: 0 })
    site.devices.set(entry.id, entry)
    for (const group of entry.groups) site.groups.set(group, (site.groups.get(group) ?? 0) + 1)
    if (entry.siteCache) site.caches.set(entry.id, entry)
    for (const group of entry.groups) {
      let members = this.byGroup.get(group)
      if (members === undefined) this.byGroup.set(group, members = new Set())
      members.add(entry.id)
    }
    if (entry.addresses.length > 0) {
      delete site.ring
      site.addressed++
    }
    const hostname = entry.hostname.toLowerCase()
    let ids = this.byHostname.get(hostname)
    if (ids === undefined) this.byHostname.set(hostname, ids = new Set())
    ids.add(entry.id)
  }

  private removeQuietly (id: string): RegisteredDevice | undefined {
    const previous = this.devices.get(id)
    if (previous === undefined) return undefined
    this.devices.delete(id)
    const site = this.sites.get(previous.site)
    if (site !== undefined) {
      site.devices.delete(id)
      site.caches.delete(id)
      for (const group of previous.groups) {
        const count = (site.groups.get(group) ?? 0) - 1
        if (count > 0) site.groups.set(group, count)
        else site.groups.delete(group)
      }
      if (previous.addresses.length > 0) {
        delete site.ring
        site.addressed--
      }
      if (site.devices.size === 0) this.sites.delete(previous.site)
    }
    for (const group of previous.groups) {
      const members = this.byGroup.get(group)
      members?.delete(id)
      if (members?.size === 0) this.byGroup.delete(group)
    }
    const hostname = previous.hostname.toLowerCase()
    const ids = this.byHostname.get(hostname)
    ids?.delete(id)
    if (ids?.size === 0) this.byHostname.delete(hostname)
    return previous
  }

  /** Ids of the active devices with this host name (any case). */
  idsOfHostname (hostname: string): readonly string[] {
    return [...(this.byHostname.get(hostname.toLowerCase()) ?? [])]
  }

  /** Every active device (start-up passes, a task for all). */
  all (): IterableIterator<RegisteredDevice> {
    return this.devices.values()
  }

  /** Names of the sites with at least one active device. */
  siteNames (): IterableIterator<string> {
    return this.sites.keys()
  }

  /** The active devices of a site. */
  ofSite (site: string): IterableIterator<RegisteredDevice> {
    return (this.sites.get(site)?.devices ?? new Map<string, RegisteredDevice>()).values()
  }

  /** Ids of the active devices in a group. */
  idsOfGroup (group: string): ReadonlySet<string> {
    return this.byGroup.get(group) ?? new Set()
  }

  /** How many active devices the site has. */
  siteSize (site: string): number {
    return this.sites.get(site)?.devices.size ?? 0
  }

  /** Whether an active device of the site is in the group. */
  siteHasGroup (site: string, group: string): boolean {
    return (this.sites.get(site)?.groups.get(group) ?? 0) > 0
  }

  /** How many devices of the site have addresses to hand out. */
  sitePeerCount (site: string): number {
    return this.sites.get(site)?.addressed ?? 0
  }

  private ringOf (site: string): Array<{ position: string, device: RegisteredDevice }> {
    const entry = this.sites.get(site)
    if (entry === undefined) return []
    if (entry.ring === undefined) {
      entry.ring = [...entry.devices.values()]
        .filter(device => device.addresses.length > 0)
        .map(device => ({ position: device.position, device }))
        .sort((a, b) => a.position < b.position ? -1 : a.position > b.position ? 1 : 0)
    }
    return entry.ring
  }

  /**
   * A bounded sample of the device's site peers: the site's caches first,
   * then the peers that follow the device's place on a ring ordered by a hash
   * of their ids (each device sees a different slice, so the site's mesh is
   * connected without everyone knowing everyone), online ones preferred. The
   * place moves with `epoch`, so samples rotate. O(sample), whatever the
   * site's size.
   */
  sampleFor (device: Pick<RegisteredDevice, 'id' | 'site'>, options: SiteSampleOptions = {}): RegisteredDevice[] {
    const size = options.size ?? DEFAULT_SITE_SAMPLE_SIZE
    const ring = this.ringOf(device.site)
    const self = this.devices.get(device.id)
    const others = ring.length - (self !== undefined && self.site === device.site && self.addresses.length > 0 ? 1 : 0)
    if (size <= 0 || others <= 0) return []
    if (others <= size) return ring.map(item => item.device).filter(other => other.id !== device.id).sort(byId)
    const chosen = new Map<string, RegisteredDevice>()
    // Caches serve the whole site: every sample names them (a few per site at most).
    for (const cache of this.sites.get(device.site)?.caches.values() ?? []) {
      if (chosen.size >= Math.ceil(size / 4)) break
      if (cache.id !== device.id && cache.addresses.length > 0) chosen.set(cache.id, cache)
    }
    const start = lowerBound(ring, positionOf(`${device.id}/${options.epoch ?? 0}`))
    const isOnline = options.isOnline ?? (() => true)
    const offline: RegisteredDevice[] = []
    const look = Math.min(ring.length, size * SAMPLE_LOOKAHEAD)
    for (let step = 0; step < look && chosen.size < size; step++) {
      const candidate = ring[(start + step) % ring.length]!.device
      if (candidate.id === device.id || chosen.has(candidate.id)) continue
      if (isOnline(candidate.id)) chosen.set(candidate.id, candidate)
      else offline.push(candidate)
    }
    for (const candidate of offline) {
      if (chosen.size >= size) break
      chosen.set(candidate.id, candidate)
    }
    return [...chosen.values()].sort(byId)
  }

  /** The site's devices with the site-cache role. */
  siteCaches (site: string): RegisteredDevice[] {
    return [...(this.sites.get(site)?.caches.values() ?? [])]
  }
}

/** Whether a change of the device changes what its site's samples are drawn from. */
function sampleChanged (previous: RegisteredDevice, next: RegisteredDevice): boolean {
  return previous.site !== next.site || previous.peerId !== next.peerId || previous.siteCache !== next.siteCache ||
    previous.addresses.length !== next.addresses.length || previous.addresses.some((address, index) => address !== next.addresses[index])
}

function lowerBound (ring: ReadonlyArray<{ position: string }>, position: string): number {
  let low = 0
  let high = ring.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if (ring[middle]!.position < position) low = middle + 1
    else high = middle
  }
  return low % Math.max(1, ring.length)
}
