/** An assignments request held open until something it concerns changes. */
export interface HeldRequest {
  deviceId: string
  site: string
  groups: readonly string[]
  /** The site cache role: its answer lists the site's packages to prefetch. */
  siteCache: boolean
  /** Device ids of the site peers its last answer named. */
  sample: readonly string[]
  /** Called at most once per change; must be cheap (the request works its answer out on its own turn). */
  wake: () => void
}

function add<K, V> (map: Map<K, Set<V>>, key: K, value: V): void {
  let set = map.get(key)
  if (set === undefined) map.set(key, set = new Set())
  set.add(value)
}

function remove<K, V> (map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key)
  if (set === undefined) return
  set.delete(value)
  if (set.size === 0) map.delete(key)
}

/**
 * Indexes the held assignments requests by device, site, group, the peers
 * their answers sampled, and the site-cache role, so that a change wakes
 * only the requests it concerns: a release wakes its devices, a device's new
 * addresses wake the requests whose sample names it, a window of a site wakes
 * that site. No listener per request on a shared emitter: waking costs what
 * the change concerns, not the number of requests held.
 */
export class AssignmentDispatcher {
  private readonly byDevice = new Map<string, Set<HeldRequest>>()
  private readonly bySite = new Map<string, Set<HeldRequest>>()
  private readonly byGroup = new Map<string, Set<HeldRequest>>()
  private readonly bySampledPeer = new Map<string, Set<HeldRequest>>()
  private readonly caches = new Set<HeldRequest>()
  private readonly all = new Set<HeldRequest>()
  private woken_ = 0
  private readonly wokenBySite_ = new Map<string, number>()

  /** Held requests woken since start, in all. */
  get woken (): number {
    return this.woken_
  }

  /** Held requests woken since start, by the site of their device: where the changes went. */
  wokenIn (site: string): number {
    return this.wokenBySite_.get(site) ?? 0
  }

  /** Requests held now. */
  get size (): number {
    return this.all.size
  }

  /** Devices with a request held now. */
  get deviceCount (): number {
    return this.byDevice.size
  }

  /** Registers a held request; the returned function unregisters it. */
  hold (request: HeldRequest): () => void {
    this.all.add(request)
    add(this.byDevice, request.deviceId, request)
    add(this.bySite, request.site, request)
    for (const group of new Set(request.groups)) add(this.byGroup, group, request)
    for (const peer of request.sample) add(this.bySampledPeer, peer, request)
    if (request.siteCache) this.caches.add(request)
    let held = true
    return () => {
      if (!held) return
      held = false
      this.all.delete(request)
      remove(this.byDevice, request.deviceId, request)
      remove(this.bySite, request.site, request)
      for (const group of new Set(request.groups)) remove(this.byGroup, group, request)
      for (const peer of request.sample) remove(this.bySampledPeer, peer, request)
      this.caches.delete(request)
    }
  }

  /** A held request's answer named other peers: the index follows. */
  resample (request: HeldRequest, sample: readonly string[]): void {
    if (!this.all.has(request)) return
    for (const peer of request.sample) remove(this.bySampledPeer, peer, request)
    request.sample = sample
    for (const peer of sample) add(this.bySampledPeer, peer, request)
  }

  isHeld (deviceId: string): boolean {
    return this.byDevice.has(deviceId)
  }

  /** Ids of the devices with a request held now. */
  heldDevices (): IterableIterator<string> {
    return this.byDevice.keys()
  }

  private wakeSet (requests: Iterable<HeldRequest> | undefined, woken: Set<HeldRequest>): void {
    if (requests === undefined) return
    for (const request of requests) {
      if (woken.has(request)) continue
      woken.add(request)
      this.woken_++
      this.wokenBySite_.set(request.site, (this.wokenBySite_.get(request.site) ?? 0) + 1)
      request.wake()
    }
  }

  /**
   * Wakes the requests a change concerns; each at most once. Returns how
   * many were woken.
   */
  wake (scope: WakeScope): number {
    const woken = new Set<HeldRequest>()
    if (scope.all === true) this.wakeSet([...this.all], woken)
    for (const deviceId of scope.deviceIds ?? []) this.wakeSet(this.byDevice.get(deviceId), woken)
    for (const site of scope.sites ?? []) this.wakeSet(this.bySite.get(site), woken)
    for (const group of scope.groups ?? []) this.wakeSet(this.byGroup.get(group), woken)
    for (const peer of scope.sampling ?? []) this.wakeSet(this.bySampledPeer.get(peer), woken)
    if (scope.siteCaches === true) this.wakeSet([...this.caches], woken)
    return woken.size
  }
}

/** Which held requests a change concerns. */
export interface WakeScope {
  all?: boolean
  deviceIds?: Iterable<string>
  sites?: Iterable<string>
  groups?: Iterable<string>
  /** Requests whose answers sampled one of these devices as a site peer. */
  sampling?: Iterable<string>
  /** Every site cache's request (its prefetch list follows the tasks of its site). */
  siteCaches?: boolean
}
