import { EventEmitter } from 'node:events'
import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  MAX_CLOCK_SKEW_MS, MalformedError, SETTLED_STATES, StaleRevisionError, describeError, followKeyRotations, openDeviceCertificate, openManifest, statusTopicOf, trustKeys,
  type DeviceTaskState, type Manifest, type SignedEnvelope, type TlsTrust
} from '../protocol/index.js'
import type { Logger } from '../protocol/logger.js'
import { ChunkCache } from './cache.js'
import type { Mesh, MeshSettings } from './p2p/mesh.js'
import { Prefetcher } from './site-cache.js'
import { SelfReporter } from './self-report.js'
import { CoordinatorClient, type AssignmentAnswer } from './coordinator-client.js'
import { reconnectDelayMs, spreadOfAnswer } from './reconnect.js'
import { AssignmentMismatchError, CoordinatorError, CoordinatorUnreachableError, RetiredKeyError, RevisionConflictError } from './errors.js'
import { enrollWithRetry } from './enrollment.js'
import { loadIdentity, loadOrEnroll, pinCoordinatorKey, saveTlsTrust, type Identity } from './identity.js'
import { Outbox } from './outbox.js'
import type { SiteStatus } from './status/site-status.js'
import { RefusalLog } from './refusals.js'
import { OriginSource, type ChunkOrigin } from './download/origin-source.js'
import type { AgentMetrics } from './metrics.js'
import type { MetricsListen } from './metrics-listen.js'
import type { Server } from 'node:http'
import { downloadPackage, type PackageFetcher } from './download/downloader.js'
import { AgentStore, type LocalTask } from './state/store.js'
import { RETRY_SOON_MS, TaskRunner, type WithdrawReason } from './tasks/runner.js'
import { VpnDetector, type InterfaceLister } from './vpn.js'
import { systemBootId, type BootIdentity } from './boot.js'
import { REBOOT_WINDOW_MS, WindowWatch } from './tasks/window-gate.js'
import { localTimeZone, openWindowSet, type WindowSet } from '../protocol/index.js'
import { requestReboot } from './install/reboot.js'
import { currentPlatform } from './platform.js'
import { AGENT_VERSION } from './version.js'

export { AGENT_VERSION }

/** A first enrollment keeps trying this long while the coordinator is out of reach. */
export { DEFAULT_ENROLL_RETRY_MS } from './enrollment.js'

export interface AgentInit {
  dataDir: string
  coordinatorUrl: string
  enrollToken?: string
  /** How long a first enrollment keeps trying while the coordinator is out of reach. @default DEFAULT_ENROLL_RETRY_MS */
  enrollRetryMs?: number
  site?: string
  groups?: string[]
  hostname?: string
  /** Folder that the manifest's absolute paths are resolved under. @default '/' */
  installRoot?: string
  logger: Logger
  /** How long an assignments request is held open. @default 25 */
  waitSeconds?: number
  /** @default 4 */
  downloadConcurrency?: number
  /** @default 1000 */
  progressIntervalMs?: number
  /** Tolerated difference between this clock and the coordinator's, at most MAX_CLOCK_SKEW_MS. @default 5 minutes */
  clockSkewMs?: number
  /** How to trust the coordinator's HTTPS certificate; stored in agent.json. @default what agent.json holds, else the system's CAs */
  tls?: TlsTrust
  /** Accept an http:// coordinator URL. @default false */
  allowInsecureHttp?: boolean
  /** Root for dpkg and rpm: '/' for the system or a private root (dpkg --root). @default installRoot */
  packageRoot?: string
  /** Name prefixes of VPN interfaces. @default DEFAULT_VPN_INTERFACE_PREFIXES */
  vpnInterfacePrefixes?: string[]
  /** Lists the interfaces that are up. @default os.networkInterfaces */
  listInterfaces?: InterfaceLister
  /** How often a task deferred by a VPN looks again. @default 15000 */
  vpnCheckIntervalMs?: number
  /** Reboots this device; gets the plan in MESHDEPLOY_REBOOT_* variables. @default the system's shutdown */
  rebootCommand?: string[]
  /** Wait after an installer asked to retry soon (1618). @default 5 minutes */
  retrySoonMs?: number
  /** Identifies this boot, to notice that a pending reboot happened. @default the system's boot id */
  bootId?: BootIdentity
  now?: () => number
  /**
   * Sharing chunks with site peers over libp2p. Absent or false: no libp2p
   * node, every byte from the origin. The command line turns it on unless
   * told `--p2p off`; an embedder chooses its addresses. @default absent
   */
  mesh?: MeshSettings | false
  /** Bound on the chunk cache. @default 10 GiB */
  cacheMaxBytes?: number
  /** Act as the site's cache: fetch the packages of tasks that target the site ahead and keep them. @default false */
  siteCache?: boolean
  /** Serve Prometheus metrics at http://HOST:PORT/metrics. @default absent: not served */
  metricsListen?: MetricsListen
  /** The zone maintenance windows without one of their own are evaluated in. @default the system's (TZ) */
  timeZone?: string
}

/** Where the agent keeps its last allow-list, so a restart admits peers before the coordinator answers. */
const CERTIFICATE_KEY = 'deviceCertificate'
const REVOKED_DEVICES_KEY = 'revokedDeviceIds'
/** The last clear-cache request carried out. */
const CLEARED_CACHE_KEY = 'clearedCacheRequest'
/** The site's status topic the coordinator last named, so a restart cut off from it joins the right one. */
const STATUS_TOPIC_KEY = 'statusTopic'
/** The site's peers the coordinator last listed, so a restart cut off from it still finds them. */
const SITE_PEERS_KEY = 'sitePeers'
/** The last maintenance window set the coordinator signed for this device, so a restart cut off from it keeps its windows. */
const WINDOWS_KEY = 'maintenanceWindows'
/** States in which work was under way: a restart takes it up again at once. */
const UNDER_WAY_STATES: ReadonlySet<DeviceTaskState> = new Set(['downloading', 'verifying', 'installing'])

interface Running {
  controller: AbortController
  runner: TaskRunner
  revision: number
  manifest: Manifest
  done: Promise<void>
}

export interface AgentEvents {
  assignments: [answer: AssignmentAnswer]
  state: [taskId: string, state: DeviceTaskState]
  refused: [taskId: string, reason: string, message: string]
  /** A key rotation was verified and the new coordinator key pinned. */
  'key-pinned': [keyId: string, sequence: number]
}

/**
 * The device agent: enrolls once, holds a request open to the coordinator
 * for its assignments, verifies every manifest against the key pinned at
 * enrollment, and runs each task.
 */
export class Agent extends EventEmitter<AgentEvents> {
  readonly identity: Identity
  readonly dataDir: string
  readonly store: AgentStore
  readonly cache: ChunkCache
  readonly outbox: Outbox
  /** Every refusal of this agent (manifests, chunks, peers, status records), logged once with its reason. */
  readonly refusals: RefusalLog
  private readonly client: CoordinatorClient
  private readonly logger: Logger
  private readonly init: AgentInit
  private readonly now: () => number
  private readonly running = new Map<string, Running>()
  private readonly retryTimers = new Map<string, { timer: NodeJS.Timeout, manifest: Manifest }>()
  private readonly vpn: VpnDetector
  /** Tasks the coordinator holds (paused or deleted): what runs finishes, nothing new starts, no retry. */
  private readonly held = new Set<string>()
  /** Task id → the package it pins in the cache. */
  private readonly pinned = new Map<string, string>()
  private readonly stopController = new AbortController()
  private loop?: Promise<void>
  private lastAnswer?: AssignmentAnswer
  private readonly origin: ChunkOrigin
  /** Prometheus metrics, when the operator asked for them. */
  readonly metrics?: AgentMetrics
  private metricsServer?: Server
  /** Where the metrics are served, when they are. */
  metricsUrl?: string
  /** The libp2p side; absent when peer sharing is off. */
  mesh?: Mesh
  /** The site's status path (gossip, relay); absent without the mesh or with status gossip off. */
  siteStatus?: SiteStatus
  private reporter?: SelfReporter
  private prefetcher?: Prefetcher
  private clearedCacheRequest = 0
  /** The device's maintenance windows, as last verified. */
  readonly windows: WindowWatch
  private windowRevision = -1
  /** Reboots waiting for a maintenance window, by task. */
  private readonly rebootWaits = new Map<string, Promise<void>>()

  /** Fetches a package's missing chunks: through the mesh (site peers first), or from the origin alone. */
  private readonly fetchPackage: PackageFetcher = async options => {
    if (this.mesh !== undefined) return await this.mesh.fetchPackage(options)
    return await downloadPackage({
      ...options,
      cache: this.cache,
      origin: this.origin,
      ...(this.init.downloadConcurrency !== undefined ? { concurrency: this.init.downloadConcurrency } : {})
    })
  }

  /** `metrics`: the metrics module, loaded only when the operator asked for metrics. */
  private constructor (init: AgentInit, identity: Identity, client: CoordinatorClient, store: AgentStore, cache: ChunkCache, metrics?: typeof import('./metrics.js')) {
    super()
    this.init = init
    this.dataDir = init.dataDir
    this.identity = identity
    this.client = client
    this.store = store
    this.cache = cache
    this.logger = init.logger.child({ deviceId: identity.deviceId })
    this.now = init.now ?? Date.now
    this.refusals = new RefusalLog({ logger: this.logger })
    this.windows = new WindowWatch({ timeZone: init.timeZone ?? localTimeZone(), now: this.now })
    this.outbox = new Outbox({ store, client, identity, logger: this.logger, refusals: this.refusals, now: this.now })
    if (metrics !== undefined) {
      this.metrics = new metrics.AgentMetrics({
        connectedPeers: () => this.mesh?.connectedPeers() ?? 0,
        cache: () => this.cache.stats(),
        taskStates: async () => await this.store.listTasks()
      })
    }
    const origin = new OriginSource(client, this.refusals)
    this.origin = this.metrics?.origin(origin) ?? origin
    this.vpn = new VpnDetector({
      ...(init.vpnInterfacePrefixes !== undefined ? { prefixes: init.vpnInterfacePrefixes } : {}),
      ...(init.listInterfaces !== undefined ? { listInterfaces: init.listInterfaces } : {}),
      ...(init.vpnCheckIntervalMs !== undefined ? { checkIntervalMs: init.vpnCheckIntervalMs } : {})
    })
  }

  /** Opens the data folder (refusing one in use), enrolls if needed, and starts working. */
  static async start (init: AgentInit): Promise<Agent> {
    if (init.clockSkewMs !== undefined && !(init.clockSkewMs >= 0 && init.clockSkewMs <= MAX_CLOCK_SKEW_MS)) {
      throw new RangeError(`the clock-skew tolerance must be between 0 and ${MAX_CLOCK_SKEW_MS} ms`)
    }
    await mkdir(init.dataDir, { recursive: true, mode: 0o700 })
    const store = await AgentStore.open(join(init.dataDir, 'db'), init.dataDir)
    try {
      const stored = await loadIdentity(init.dataDir)
      const tls = init.tls ?? stored?.tls ?? {}
      const client = new CoordinatorClient({ url: init.coordinatorUrl, tls, ...(init.allowInsecureHttp !== undefined ? { allowInsecureHttp: init.allowInsecureHttp } : {}) })
      // A device installed while the coordinator is out of reach keeps trying to enroll for a while
      // (each try with a new key: one whose answer was lost may be enrolled already).
      const loaded = await enrollWithRetry(async () => await loadOrEnroll({
        dataDir: init.dataDir,
        client,
        agentVersion: AGENT_VERSION,
        tls,
        ...(init.enrollToken !== undefined ? { enrollToken: init.enrollToken } : {}),
        ...(init.site !== undefined ? { site: init.site } : {}),
        ...(init.groups !== undefined ? { groups: init.groups } : {}),
        ...(init.hostname !== undefined ? { hostname: init.hostname } : {})
      }), { logger: init.logger, ...(init.enrollRetryMs !== undefined ? { giveUpAfterMs: init.enrollRetryMs } : {}) })
      const { identity, enrolled } = loaded
      if (!enrolled && init.tls !== undefined) await saveTlsTrust(init.dataDir, identity, init.tls)
      client.setCredential(identity.credential)
      // Without the mesh no peer asks for pieces: no chunk is kept in memory to serve them.
      const cache = new ChunkCache({ root: join(init.dataDir, 'cache'), ...(init.cacheMaxBytes !== undefined ? { maxBytes: init.cacheMaxBytes } : {}), ...(init.mesh === undefined || init.mesh === false ? { serveBufferBytes: 0 } : {}) })
      await cache.open()
      // prom-client is loaded only for an agent that serves metrics.
      const metricsModule = init.metricsListen !== undefined ? await import('./metrics.js') : undefined
      const agent = new Agent(init, identity, client, store, cache, metricsModule)
      agent.logger.info({ enrolled, site: identity.site, peerId: identity.peerId }, enrolled ? 'enrolled' : 'identity loaded')
      if (loaded.certificate !== undefined) await agent.keepEnrollmentCertificate(loaded.certificate)
      await agent.confirmReboots()
      await agent.loadWindows()
      await agent.startMesh()
      if (agent.metrics !== undefined && metricsModule !== undefined && init.metricsListen !== undefined) {
        const { server, url } = await metricsModule.serveMetrics(agent.metrics, init.metricsListen)
        agent.metricsServer = server
        agent.metricsUrl = url
        agent.logger.info({ url }, 'serving metrics')
      }
      await agent.resumeUnderWay()
      await agent.resumeRebootWaits()
      agent.loop = agent.assignmentLoop()
      agent.outbox.flushSoon()
      return agent
    } catch (error) {
      await store.close()
      throw error
    }
  }

  /** Tasks that waited for a reboot are done once the device has restarted. */
  private async confirmReboots (): Promise<void> {
    const bootId = await (this.init.bootId ?? systemBootId)()
    for (const task of await this.store.listTasks()) {
      if (task.state !== 'succeeded-reboot-pending' || task.bootId === undefined || task.bootId === bootId) continue
      const { bootId: _previous, pendingReboot: _pending, ...rest } = task
      await this.outbox.record(rest, { state: 'succeeded', bytesTotal: 0, bytesDone: 0, bytesFromPeers: task.bytesFromPeers, bytesFromOrigin: task.bytesFromOrigin, exitCode: task.exitCode ?? null, message: 'the device has restarted since the install: the reboot is done' })
    }
  }

  /** The window set kept from the last answer: windows hold while the coordinator is out of reach. */
  private async loadWindows (): Promise<void> {
    const stored = await this.store.getMeta<unknown>(WINDOWS_KEY)
    if (stored === undefined) return
    try {
      this.applyWindowSet(openWindowSet(stored, trustKeys(this.identity.coordinatorPublicKey)))
    } catch (error) {
      this.logger.warn({ err: describeError(error) }, 'the stored maintenance windows no longer verify; waiting for the coordinator\'s')
    }
  }

  private applyWindowSet (set: WindowSet): void {
    this.windowRevision = set.revision
    this.windows.update(set.windows)
  }

  /** Verifies the answer's window set against the pinned key; an older or forged one changes nothing. */
  private async acceptWindows (answer: AssignmentAnswer): Promise<void> {
    if (answer.maintenanceWindows === undefined) return
    try {
      const set = openWindowSet(answer.maintenanceWindows, trustKeys(this.identity.coordinatorPublicKey))
      if (set.revision < this.windowRevision) throw new StaleRevisionError(this.windowRevision, set.revision)
      const changed = JSON.stringify(set.windows) !== JSON.stringify(this.windows.windows)
      await this.store.putMeta(WINDOWS_KEY, answer.maintenanceWindows)
      this.applyWindowSet(set)
      if (changed) this.logger.info({ revision: set.revision, windows: set.windows.length }, 'maintenance windows updated')
    } catch (error) {
      const reason = (error as { reason?: string }).reason ?? 'refused'
      this.refusals.refuse({ subject: 'maintenance-windows', reason, message: `${describeError(error)}; the windows held stay` }, 'error')
    }
  }

  /** Reboots that waited for a maintenance window when the agent stopped wait again. */
  private async resumeRebootWaits (): Promise<void> {
    for (const task of await this.store.listTasks()) if (task.pendingReboot !== undefined && task.state === 'succeeded-reboot-pending') this.awaitRebootWindow(task)
  }

  /** Makes a reboot the task's policy asked for once a maintenance window is open, capping the user's deadline to the window. */
  private awaitRebootWindow (task: LocalTask): void {
    if (this.rebootWaits.has(task.taskId) || task.pendingReboot === undefined) return
    const pending = task.pendingReboot
    const signal = this.stopController.signal
    const wait = (async () => {
      for (;;) {
        const slot = this.windows.slotFor(REBOOT_WINDOW_MS)
        const now = this.now()
        if (slot !== undefined && slot.startMs <= now) {
          const delaySeconds = Math.max(0, Math.min(pending.delaySeconds, Math.floor((slot.endMs - now) / 1000) - 60))
          const plan = { action: 'reboot' as const, delaySeconds, message: pending.message, forceCloseApps: pending.forceCloseApps, reason: 'a maintenance window is open' }
          const result = await requestReboot(plan, { platform: currentPlatform(), ...(this.init.rebootCommand !== undefined ? { command: this.init.rebootCommand } : {}) })
          this.logger.info({ taskId: task.taskId, ok: result.ok, detail: result.detail }, 'reboot requested in a maintenance window')
          const current = await this.store.getTask(task.taskId)
          if (current === undefined || current.state !== 'succeeded-reboot-pending') return
          const { pendingReboot: _done, ...rest } = current
          const at = new Date(now + delaySeconds * 1000).toISOString()
          await this.outbox.record(rest, {
            state: 'succeeded-reboot-pending',
            bytesTotal: 0,
            bytesDone: 0,
            bytesFromPeers: current.bytesFromPeers,
            bytesFromOrigin: current.bytesFromOrigin,
            exitCode: current.exitCode ?? null,
            message: result.ok ? `a maintenance window is open: reboot at ${at}` : `a maintenance window is open, but the reboot could not be requested: ${result.detail}`
          })
          return
        }
        await this.windows.sleep(slot?.startMs, signal)
      }
    })().catch(error => {
      if (!signal.aborted) this.logger.error({ taskId: task.taskId, err: describeError(error) }, 'the reboot waiting for a maintenance window failed')
    }).finally(() => { this.rebootWaits.delete(task.taskId) })
    this.rebootWaits.set(task.taskId, wait)
  }

  /**
   * Work that was under way when the agent stopped goes on at once, from the
   * manifest it had accepted (verified again), without waiting for the
   * coordinator: a device restarted in a site cut off from the coordinator
   * still finishes from its LAN peers. The next assignments answer then
   * withdraws or holds it as usual.
   */
  private async resumeUnderWay (): Promise<void> {
    for (const task of await this.store.listTasks()) {
      if (!UNDER_WAY_STATES.has(task.state) || task.manifest === undefined) continue
      try {
        const manifest = this.openAssignment({ taskId: task.taskId, revision: task.revision, manifest: task.manifest })
        this.logger.info({ taskId: task.taskId, state: task.state }, 'taking up the work under way when the agent stopped')
        await this.consider(manifest, task.manifest)
      } catch (error) {
        this.logger.warn({ taskId: task.taskId, err: describeError(error) }, 'the work under way waits for the coordinator: its manifest no longer holds')
      }
    }
  }

  /** Starts the libp2p node (unless peer sharing is off), the self reports and the site cache role. */
  private async startMesh (): Promise<void> {
    this.clearedCacheRequest = await this.store.getMeta<number>(CLEARED_CACHE_KEY) ?? 0
    if (this.init.mesh !== undefined && this.init.mesh !== false) {
      const gossip = this.init.mesh.statusGossip ?? true
      // libp2p, gossipsub and noise are loaded only when the mesh is on.
      const { Mesh } = await import('./p2p/mesh.js')
      this.mesh = await Mesh.start({
        ...this.init.mesh,
        identity: this.identity,
        cache: this.cache,
        origin: this.origin,
        logger: this.logger,
        refusals: this.refusals,
        ...await this.storedTrust(),
        ...(gossip ? { statusTopic: await this.store.getMeta<string>(STATUS_TOPIC_KEY) ?? statusTopicOf(this.identity.coordinatorKeyId, this.identity.site) } : {}),
        ...(this.metrics !== undefined ? { instrument: { network: network => this.metrics!.network(network), pieces: source => this.metrics!.pieces(source) } } : {})
      })
      this.mesh.on('changed', () => { this.reporter?.soon() })
      const sitePeers = await this.store.getMeta<AssignmentAnswer['peers']>(SITE_PEERS_KEY)
      if (sitePeers !== undefined) await this.mesh.apply({ peers: sitePeers })
      if (this.mesh.statusGossip !== undefined) {
        const { SiteStatus } = await import('./status/site-status.js')
        this.siteStatus = new SiteStatus({ ...this.init.mesh.siteStatus, gossip: this.mesh.statusGossip, outbox: this.outbox, poster: this.client, reachability: this.client.reachability, logger: this.logger, now: this.now })
        this.siteStatus.on('relay', () => { this.reporter?.soon() })
        this.siteStatus.start()
      }
    }
    if (this.init.siteCache === true) {
      this.prefetcher = new Prefetcher({
        cache: this.cache,
        fetchPackage: this.fetchPackage,
        logger: this.logger,
        refusals: this.refusals,
        verify: (taskId, envelope) => {
          const { manifest } = openManifest(envelope, {
            keys: trustKeys(this.identity.coordinatorPublicKey),
            now: this.now(),
            ...(this.init.clockSkewMs !== undefined ? { clockSkewMs: this.init.clockSkewMs } : {})
          })
          if (manifest.taskId !== taskId) throw new MalformedError(`the manifest is for task ${manifest.taskId}, not ${taskId}`)
          return manifest
        }
      })
    }
    this.reporter = new SelfReporter({
      client: this.client,
      logger: this.logger,
      snapshot: () => ({
        peerAddresses: this.mesh?.addresses() ?? [],
        siteCache: this.init.siteCache === true,
        connectedPeers: this.mesh?.connectedPeers() ?? 0,
        cache: this.cache.stats(),
        ...(this.siteStatus !== undefined ? { statusRelay: this.siteStatus.isRelay } : {}),
        ...(this.clearedCacheRequest > 0 ? { clearedCacheRequest: this.clearedCacheRequest } : {})
      })
    })
    this.reporter.start()
    this.cache.on('changed', () => { this.reporter?.soon() })
  }

  /**
   * The certificate of the enrollment answer, checked against the pinned key
   * and this device's peer id: the mesh presents it from its first
   * connection instead of waiting for the first assignments answer.
   */
  private async keepEnrollmentCertificate (certificate: unknown): Promise<void> {
    try {
      openDeviceCertificate(certificate, { keys: trustKeys(this.identity.coordinatorPublicKey), now: this.now(), peerId: this.identity.peerId })
    } catch (error) {
      this.logger.warn({ err: describeError(error) }, 'the enrollment answer\'s device certificate does not hold; waiting for the next one')
      return
    }
    await this.store.putMeta(CERTIFICATE_KEY, certificate as SignedEnvelope)
  }

  /** The device certificate and revocations the agent last had: a restart does not wait for the coordinator. */
  private async storedTrust (): Promise<{ certificate?: SignedEnvelope, revokedDeviceIds?: string[] }> {
    const certificate = await this.store.getMeta<SignedEnvelope>(CERTIFICATE_KEY)
    const revokedDeviceIds = await this.store.getMeta<string[]>(REVOKED_DEVICES_KEY)
    return { ...(certificate !== undefined ? { certificate } : {}), ...(revokedDeviceIds !== undefined ? { revokedDeviceIds } : {}) }
  }

  /** The mesh part of an assignments answer: the device certificate, revocations, site peers, a cache clear, the site cache's prefetches. */
  private async applyMesh (answer: AssignmentAnswer): Promise<void> {
    if (answer.certificate !== undefined) await this.store.putMeta(CERTIFICATE_KEY, answer.certificate)
    if (answer.revokedDeviceIds !== undefined) await this.store.putMeta(REVOKED_DEVICES_KEY, answer.revokedDeviceIds)
    if (this.mesh !== undefined && Array.isArray(answer.peers)) await this.store.putMeta(SITE_PEERS_KEY, answer.peers)
    await this.mesh?.apply(answer)
    if (this.siteStatus !== undefined && typeof answer.statusTopic === 'string' && answer.statusTopic.length <= 300 && answer.statusTopic !== this.mesh?.statusGossip?.topic) {
      this.siteStatus.setTopic(answer.statusTopic)
      await this.store.putMeta(STATUS_TOPIC_KEY, answer.statusTopic)
    }
    if (answer.clearCacheRequest !== undefined && answer.clearCacheRequest > this.clearedCacheRequest) {
      const freedBytes = await this.cache.clear()
      this.clearedCacheRequest = answer.clearCacheRequest
      await this.store.putMeta(CLEARED_CACHE_KEY, this.clearedCacheRequest)
      this.logger.info({ request: answer.clearCacheRequest, freedBytes, ...this.cache.stats() }, 'cache cleared at the operator\'s request')
      this.reporter?.soon(0)
    }
    this.prefetcher?.apply(answer.prefetch ?? [])
  }

  get installRoot (): string {
    return resolve(this.init.installRoot ?? '/')
  }

  private async assignmentLoop (): Promise<void> {
    const signal = this.stopController.signal
    const waitSeconds = this.init.waitSeconds ?? 25
    let etag: string | undefined
    let failures = 0
    while (!signal.aborted) {
      try {
        const answer = await this.client.assignments(etag, waitSeconds, { signal })
        failures = 0
        if (answer.etag !== etag) {
          etag = answer.etag
          this.lastAnswer = answer
          this.emit('assignments', answer)
          await this.applyMesh(answer)
          await this.reconcile(answer)
        }
        this.outbox.flushSoon()
      } catch (error) {
        if (signal.aborted) return
        const retryAfterMs = error instanceof CoordinatorError ? error.retryAfterMs : undefined
        // Agents told to come back together (a busy or restarted coordinator) do not return together.
        const retryInMs = reconnectDelayMs({ attempt: failures, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}), spreadMs: spreadOfAnswer(this.lastAnswer) })
        failures++
        this.logger.warn({ err: describeError(error), retryInMs }, 'cannot get assignments')
        await sleep(retryInMs, undefined, { signal }).catch(() => {})
      }
    }
  }

  /**
   * Follows the coordinator's key rotations from the pinned key: each
   * statement is verified against the key before it, and the new key is
   * written to agent.json before it is trusted. A chain that does not verify
   * changes nothing; manifests signed by a key the agent does not hold are
   * then refused one by one.
   */
  private async followRotations (answer: AssignmentAnswer): Promise<void> {
    const statements = answer.keyRotations ?? []
    if (!Array.isArray(statements) || statements.length === 0) return
    try {
      const chain = followKeyRotations({ publicKey: this.identity.coordinatorPublicKey, sequence: this.identity.coordinatorKeySequence }, statements)
      if (chain.applied.length === 0) return
      await pinCoordinatorKey(this.dataDir, this.identity, chain)
      this.logger.warn({ keyId: this.identity.coordinatorKeyId, sequence: chain.pinned.sequence, retired: chain.retiredKeyIds }, 'followed a coordinator key rotation; the new key is pinned')
      this.emit('key-pinned', this.identity.coordinatorKeyId, chain.pinned.sequence)
    } catch (error) {
      const reason = (error as { reason?: string }).reason ?? 'key-rotation-refused'
      this.refusals.refuse({ subject: 'key-rotation', reason, message: `${describeError(error)}; the pinned key stays` }, 'error')
      this.emit('refused', '(key-rotation)', reason, describeError(error))
    }
  }

  /** Verifies one assignment's manifest: signed by the pinned key, valid now, and for the task and revision the assignment names. */
  private openAssignment (assignment: AssignmentAnswer['assignments'][number]): Manifest {
    const envelope = assignment.manifest as SignedEnvelope | undefined
    if (envelope === null || typeof envelope !== 'object') throw new MalformedError('the assignment carries no manifest')
    if (typeof envelope.keyId === 'string' && this.identity.retiredCoordinatorKeyIds.includes(envelope.keyId)) throw new RetiredKeyError(envelope.keyId)
    const manifest = openManifest(envelope, {
      keys: trustKeys(this.identity.coordinatorPublicKey),
      now: this.now(),
      ...(this.init.clockSkewMs !== undefined ? { clockSkewMs: this.init.clockSkewMs } : {})
    }).manifest
    // The signed manifest names its task; the assignment list says whether this device acts on it. Both must agree.
    if (manifest.taskId !== assignment.taskId) throw new AssignmentMismatchError(`the manifest is for task ${manifest.taskId}, not ${assignment.taskId}`)
    if (manifest.revision !== assignment.revision) throw new AssignmentMismatchError(`the manifest is revision ${manifest.revision}, the assignment names ${assignment.revision}`)
    return manifest
  }

  /** Brings the running tasks in line with the coordinator's list. */
  private async reconcile (answer: AssignmentAnswer): Promise<void> {
    await this.followRotations(answer)
    await this.acceptWindows(answer)
    const listed = new Set<string>()
    const assignments = Array.isArray(answer.assignments) ? answer.assignments : []
    for (const assignment of assignments) {
      if (typeof assignment?.taskId !== 'string' || assignment.taskId === '' || assignment.taskId.length > 100) {
        this.logger.error({ taskId: String(assignment?.taskId).slice(0, 100) }, 'ignored an assignment without a valid task id')
        continue
      }
      listed.add(assignment.taskId)
      let manifest: Manifest
      try {
        manifest = this.openAssignment(assignment)
      } catch (error) {
        await this.refuse(assignment.taskId, error)
        continue
      }
      await this.consider(manifest, assignment.manifest, assignment.mode)
    }
    for (const [taskId, running] of this.running) {
      if (listed.has(taskId) || running.runner.installing) continue
      const reason = this.withdrawReason(running.manifest)
      this.logger.info({ taskId, reason }, 'task withdrawn by the coordinator')
      running.controller.abort(reason)
    }
    for (const [taskId, { timer, manifest }] of this.retryTimers) {
      if (listed.has(taskId)) continue
      clearTimeout(timer)
      this.retryTimers.delete(taskId)
      this.unpinTask(taskId)
      const task = await this.store.getTask(taskId)
      if (task !== undefined && !SETTLED_STATES.has(task.state) && task.final !== true) {
        const expired = this.withdrawReason(manifest) === 'expired'
        await this.outbox.record({ ...task }, {
          state: expired ? 'expired' : 'cancelled',
          bytesTotal: 0,
          bytesDone: 0,
          bytesFromPeers: task.bytesFromPeers,
          bytesFromOrigin: task.bytesFromOrigin,
          message: expired ? `the task's validity ended at ${manifest.expiresAt}` : 'the task was withdrawn'
        })
      }
    }
  }

  /** A task the coordinator no longer lists ended by its validity, or was cancelled or taken from this device. */
  private withdrawReason (manifest: Manifest): WithdrawReason {
    return Date.parse(manifest.expiresAt) <= this.now() ? 'expired' : 'cancelled'
  }

  /** Reports a manifest the agent will not act on, and keeps its state as it was. */
  private async refuse (taskId: string, error: unknown, verifiedRevision?: number): Promise<void> {
    const reason = (error as { reason?: string }).reason ?? 'refused'
    const message = `manifest refused: ${describeError(error)}`
    this.refusals.refuse({ subject: 'manifest', reason, taskId, message: describeError(error) }, 'error')
    this.emit('refused', taskId, reason, message)
    const existing = await this.store.getTask(taskId)
    if (existing?.message === message) return
    // The refusal is reported under the revision the agent holds, never under the unverified one.
    const base: LocalTask = existing ?? {
      taskId, revision: 1, state: 'pending', attempt: 0, failures: 0, seq: 0, bytesFromPeers: 0, bytesFromOrigin: 0, updatedAt: this.now()
    }
    // An older revision that verified (a rollback) is reported under its own number: the coordinator knows no later one.
    const reportAs = verifiedRevision !== undefined ? { revision: Math.min(verifiedRevision, base.revision) } : {}
    const updated = await this.outbox.record(base, { state: 'failed', bytesTotal: 0, bytesDone: 0, bytesFromPeers: base.bytesFromPeers, bytesFromOrigin: base.bytesFromOrigin, message }, reportAs)
    await this.store.putTask({ ...base, seq: updated.seq, message })
  }

  /**
   * Acts on a verified manifest. A new revision starts afresh but keeps the
   * attempt counter, unless the task was re-run for failed devices. In
   * `finish` mode (the task is paused or deleted) only work already under
   * way goes on.
   */
  private async consider (manifest: Manifest, envelope: SignedEnvelope, mode?: 'finish'): Promise<void> {
    let existing = await this.store.getTask(manifest.taskId)
    if (existing !== undefined && existing.revision > manifest.revision) {
      await this.refuse(manifest.taskId, new StaleRevisionError(existing.revision, manifest.revision), manifest.revision)
      return
    }
    if (existing?.manifest !== undefined && existing.revision === manifest.revision) {
      // A revision is signed once: other bytes under the same number are a substitution, not an update.
      if (existing.manifest.payload !== envelope.payload) {
        await this.refuse(manifest.taskId, new RevisionConflictError(manifest.taskId, manifest.revision))
        return
      }
      // The same bytes under a new signature: the coordinator re-signed them after a key rotation; keep the envelope that verifies now.
      if (existing.manifest.signature !== envelope.signature) {
        existing = { ...existing, manifest: envelope }
        await this.store.putTask(existing)
      }
    }
    const running = this.running.get(manifest.taskId)
    if (mode === 'finish') this.held.add(manifest.taskId)
    else this.held.delete(manifest.taskId)
    if (mode === 'finish') {
      if (running !== undefined && !running.runner.busy) running.controller.abort('held' satisfies WithdrawReason)
      const retry = this.retryTimers.get(manifest.taskId)
      if (retry !== undefined) {
        clearTimeout(retry.timer)
        this.retryTimers.delete(manifest.taskId)
      }
      return
    }
    if (running !== undefined) {
      if (running.revision === manifest.revision || running.runner.installing) return
      running.controller.abort('held' satisfies WithdrawReason)
      await running.done
    }
    let task: LocalTask
    if (existing?.manifest === undefined || existing.revision < manifest.revision) {
      const rerun = manifest.rerun > (existing?.rerun ?? 0)
      task = {
        taskId: manifest.taskId,
        revision: manifest.revision,
        manifest: envelope,
        state: 'pending',
        attempt: 0,
        failures: rerun ? 0 : existing?.failures ?? 0,
        rerun: manifest.rerun,
        seq: existing?.seq ?? 0,
        bytesFromPeers: 0,
        bytesFromOrigin: 0,
        updatedAt: this.now()
      }
      const previousTimer = this.retryTimers.get(manifest.taskId)
      if (previousTimer !== undefined) {
        clearTimeout(previousTimer.timer)
        this.retryTimers.delete(manifest.taskId)
      }
      await this.store.putTask(task)
    } else {
      task = existing
    }
    if (SETTLED_STATES.has(task.state) || task.final === true) {
      this.unpinTask(task.taskId)
      return
    }
    // The package stays in the cache while the task needs it, retries included.
    this.cache.pin(manifest.package, manifest.taskId)
    this.pinned.set(manifest.taskId, manifest.package.id)
    const waitMs = (task.retryAt ?? 0) - this.now()
    if (waitMs > 0) {
      this.scheduleRetry(manifest, task, waitMs)
      return
    }
    this.launch(manifest, task)
  }

  private scheduleRetry (manifest: Manifest, task: LocalTask, waitMs: number): void {
    if (this.retryTimers.has(task.taskId)) return
    const timer: NodeJS.Timeout = setTimeout(() => {
      this.retryTimers.delete(task.taskId)
      void this.store.getTask(task.taskId).then(current => {
        if (current !== undefined && current.revision === manifest.revision && !this.held.has(task.taskId) && !this.stopController.signal.aborted) this.launch(manifest, current)
      })
    }, Math.min(waitMs, 2 ** 31 - 1))
    timer.unref()
    this.retryTimers.set(task.taskId, { timer, manifest })
  }

  private launch (manifest: Manifest, task: LocalTask): void {
    if (this.running.has(task.taskId)) return
    const controller = new AbortController()
    const runner = new TaskRunner({
      store: this.store,
      outbox: this.outbox,
      cache: this.cache,
      fetchPackage: this.fetchPackage,
      logger: this.logger,
      dataDir: this.dataDir,
      installRoot: this.installRoot,
      packageRoot: this.init.packageRoot !== undefined ? resolve(this.init.packageRoot) : this.installRoot,
      vpn: this.vpn,
      windows: this.windows,
      now: this.now,
      ...(this.init.rebootCommand !== undefined ? { rebootCommand: this.init.rebootCommand } : {}),
      ...(this.init.retrySoonMs !== undefined ? { retrySoonMs: this.init.retrySoonMs } : {}),
      ...(this.init.bootId !== undefined ? { bootId: this.init.bootId } : {}),
      ...(this.init.progressIntervalMs !== undefined ? { progressIntervalMs: this.init.progressIntervalMs } : {})
    }, task, manifest, controller.signal, this.stopController.signal)
    const done = runner.run().then(result => {
      this.emit('state', result.taskId, result.state)
      this.logger.info({ taskId: result.taskId, state: result.state, attempt: result.attempt }, 'task attempt ended')
      if (result.retryAt !== undefined && result.final !== true && !this.held.has(result.taskId) && !this.stopController.signal.aborted) {
        this.scheduleRetry(manifest, result, result.retryAt - this.now())
      } else if (SETTLED_STATES.has(result.state) || result.final === true) {
        this.unpinTask(result.taskId)
      }
      if (result.pendingReboot !== undefined && result.state === 'succeeded-reboot-pending') this.awaitRebootWindow(result)
    }, error => {
      // The attempt could not even record its failure (a full disk, say): the state stays as it was, and the task is tried again soon.
      this.logger.error({ taskId: task.taskId, err: describeError(error) }, 'task attempt could not complete')
      this.emit('refused', task.taskId, 'local-error', describeError(error))
      if (!this.held.has(task.taskId) && !this.stopController.signal.aborted) this.scheduleRetry(manifest, task, this.init.retrySoonMs ?? RETRY_SOON_MS)
    }).finally(() => {
      this.running.delete(task.taskId)
    })
    this.running.set(task.taskId, { controller, runner, revision: manifest.revision, manifest, done })
  }

  private unpinTask (taskId: string): void {
    const packageId = this.pinned.get(taskId)
    if (packageId === undefined) return
    this.pinned.delete(taskId)
    this.cache.unpin(packageId, taskId)
  }

  /** The last assignments answer, for diagnostics. */
  get assignments (): AssignmentAnswer | undefined {
    return this.lastAnswer
  }

  async stop (): Promise<void> {
    this.stopController.abort()
    this.metricsServer?.closeAllConnections()
    this.metricsServer?.close()
    for (const { timer } of this.retryTimers.values()) clearTimeout(timer)
    await this.loop
    await Promise.all([...this.running.values()].map(async running => { await running.done }))
    await Promise.all([...this.rebootWaits.values()])
    await this.prefetcher?.stop()
    await this.reporter?.stop()
    await this.siteStatus?.stop()
    await this.mesh?.stop()
    await this.cache.flush()
    await this.outbox.stop()
    this.client.close()
    await this.store.close()
  }
}
