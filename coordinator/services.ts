import { join } from 'node:path'
import { mkdir } from 'node:fs/promises'
import { ContentStore, DEFAULT_MAX_PACKAGE_BYTES, VerifierPool } from '../protocol/index.js'
import { TokenService } from './auth/tokens.js'
import { DeviceService } from './devices/service.js'
import { DeviceCertificates } from './devices/certificates.js'
import { SiteService } from './sites/service.js'
import { PackageService } from './packages/service.js'
import { TaskService } from './tasks/service.js'
import { ReleaseLedger } from './tasks/releases.js'
import { Scheduler } from './tasks/scheduler.js'
import { DirectoryService } from './directory/service.js'
import { SettingsService } from './settings/service.js'
import { PublisherService } from './publishers/service.js'
import { RequestService } from './requests/service.js'
import { AssignmentService } from './agents/assignments.js'
import { StatusService } from './agents/statuses.js'
import { ContentAccess } from './agents/content-access.js'
import { CoordinatorKeyring, type CoordinatorKey } from './signing-key.js'
import { ManifestSigner } from './manifest-signer.js'
import { AuditLog } from './audit/log.js'
import { openStore, DEFAULT_STORE } from './store/open.js'
import { PostgresStore } from './store/postgres-store.js'
import { SchedulerLease, SoleLeadership } from './cluster/lease.js'
import { followOtherCoordinators } from './cluster/follow.js'
import { shareDataFile, updateSharedFile } from './store/shared-files.js'
import type { Store } from './store/types.js'
import type { Logger } from '../protocol/logger.js'
import { CoordinatorMetrics } from './metrics.js'
import { EventJournal } from './events/journal.js'
import { connectEventSources } from './events/sources.js'
import { CredentialService } from './credentials/service.js'
import { CredentialVault } from './credentials/vault.js'
import { defaultAgentPackagesDir } from './push/agent-packages.js'
import { HostKeyBook } from './push/host-keys.js'
import { HostInstaller } from './push/installer.js'
import { PushService } from './push/service.js'
import { SshTransport } from './push/ssh-transport.js'
import type { PushTransport } from './push/transport.js'
import { MaintenanceWindowService } from './windows/service.js'
import { InstallationIndex } from './inventory/service.js'

/** A stray chunk in a shared content folder is removed at start only when it is older than this: 1 day. */
export const SHARED_CONTENT_GRACE_MS = 24 * 3600_000

export interface ServicesInit {
  dataDir: string
  /** `level` (in DATA/db) or a PostgreSQL address shared with other coordinators. @default DEFAULT_STORE */
  store?: string
  /** Where chunks are kept; several coordinators may share one folder. @default DATA/content */
  contentDir?: string
  logger: Logger
  /** @default DEFAULT_MAX_PACKAGE_BYTES (8 GiB) */
  maxPackageBytes?: number
  /** @default 1 MiB */
  chunkSizeBytes?: number
  /** @default 30 */
  pollIntervalSeconds?: number
  /** Assignments requests held open at most; past it, 503 with Retry-After. @default DEFAULT_MAX_HELD_REQUESTS */
  maxHeldAssignmentRequests?: number
  /** Reconnects per second the fleet's return after a restart is spread to. @default DEFAULT_RECONNECTS_PER_SECOND */
  reconnectsPerSecond?: number
  /** Events kept for operators' clients that resume. @default DEFAULT_RETAINED_EVENTS */
  retainedEvents?: number
  /** The scheduler ticks by itself; tests with a fake clock call `scheduler.tick()` instead. @default true */
  autoTick?: boolean
  now?: () => number
  /** Where the agent packages for push installs are. @default dist-packages/ of this checkout */
  agentPackagesDir?: string
  /** How push installs reach hosts. @default SSH */
  pushTransport?: PushTransport
  /** Push installs' waits (retry delays, enrollment polls); tests pass a fast one. */
  pushSleep?: (ms: number, signal: AbortSignal) => Promise<void>
  /** Push runs at once, and waiting. @default DEFAULT_RUNNING_PUSHES, DEFAULT_QUEUED_PUSHES */
  pushQueue?: { running?: number, queued?: number }
}

export interface Services {
  dataDir: string
  logger: Logger
  store: Store
  content: ContentStore
  /** The current manifest signing key (follows rotations). */
  key: CoordinatorKey
  keyring: CoordinatorKeyring
  manifests: ManifestSigner
  audit: AuditLog
  tokens: TokenService
  devices: DeviceService
  /** Device certificates agents present to each other, and the revoked devices. */
  certificates: DeviceCertificates
  sites: SiteService
  packages: PackageService
  tasks: TaskService
  scheduler: Scheduler
  directory: DirectoryService
  settings: SettingsService
  publishers: PublisherService
  requests: RequestService
  assignments: AssignmentService
  /** Which chunks the origin serves each device. */
  contentAccess: ContentAccess
  statuses: StatusService
  /** Maintenance windows of sites, groups and devices. */
  windows: MaintenanceWindowService
  /** The operators' live events (GET /v1/events). */
  events: EventJournal
  /** Accounts and SSH keys push installs log in with. */
  credentials: CredentialService
  /** Agentless installs over SSH: the agent, or a package. */
  pushInstalls: PushService
  metrics: CoordinatorMetrics
  startedAt: number
  /** The admin token's secret, only on the start that created it. */
  bootstrapAdminToken?: string
  close: () => Promise<void>
}

/** Opens the store, the content store and the signing key, and wires the domain services together. */
export async function openServices (init: ServicesInit): Promise<Services> {
  await mkdir(init.dataDir, { recursive: true, mode: 0o700 })
  const now = init.now ?? Date.now
  const storeAddress = init.store ?? DEFAULT_STORE
  const store = await openStore(storeAddress, init.dataDir, init.logger)
  const shared = storeAddress !== 'level'
  const content = new ContentStore(init.contentDir ?? join(init.dataDir, 'content'), { shared })
  await content.open()
  const keyPath = join(init.dataDir, 'signing-key.json')
  const credentialKeyPath = join(init.dataDir, 'credential-key')
  try {
    // Coordinators of one database sign with one key and seal secrets with one key.
    await shareDataFile(store, 'signing-key.json', keyPath, async () => { await CoordinatorKeyring.open(keyPath, now) })
    await shareDataFile(store, 'credential-key', credentialKeyPath, async () => { await CredentialVault.open(credentialKeyPath) })
  } catch (error) {
    await store.close()
    throw error
  }
  const { keyring } = await CoordinatorKeyring.open(keyPath, now)
  keyring.on('rotated', () => {
    updateSharedFile(store, 'signing-key.json', keyPath).catch(error => { init.logger.error({ err: error }, 'cannot share the rotated signing key with the other coordinators') })
  })
  const key = keyring.signer
  const manifests = new ManifestSigner(keyring)
  const audit = new AuditLog({ store, now })
  const tokens = new TokenService({ store, now })
  const sites = new SiteService({ store, now })
  await sites.open()
  const devices = new DeviceService({ store, now, siteForAddress: address => sites.siteForAddress(address), addressInSite: (site, address) => sites.siteContains(site, address) })
  await devices.open()
  const certificates = new DeviceCertificates({ keyring, store, now })
  await certificates.open()
  sites.on('boundaries-changed', () => {
    devices.replaceAll().then(moved => {
      if (moved.length > 0) init.logger.info({ moved }, 'devices placed in other sites after a boundary change')
    }, error => { init.logger.error({ err: error }, 'cannot place devices after a boundary change') })
  })
  const windows = new MaintenanceWindowService({ store, now })
  await windows.open()
  const settings = new SettingsService({ store })
  await settings.open()
  const publishers = new PublisherService({ store, now })
  const directory = new DirectoryService({ store, now })
  await directory.open()
  const releases = new ReleaseLedger({ store })
  await releases.open()
  const packages = new PackageService({
    store,
    content,
    settings,
    publishers,
    maxPackageBytes: init.maxPackageBytes ?? DEFAULT_MAX_PACKAGE_BYTES,
    ...(init.chunkSizeBytes !== undefined ? { chunkSizeBytes: init.chunkSizeBytes } : {}),
    now
  })
  // A shared content folder may hold chunks of another coordinator's upload in progress: only old strays go.
  const removed = await packages.collectGarbage(shared ? { olderThanMs: SHARED_CONTENT_GRACE_MS } : {})
  if (removed > 0) init.logger.info({ removed }, 'removed chunks left by interrupted uploads')
  const installations = new InstallationIndex({ store })
  await installations.open()
  const tasks = new TaskService({ store, packages, devices, directory, settings, publishers, releases, key, installations, now })
  await tasks.open()
  const requests = new RequestService({ store, packages, devices, tasks, settings, now })
  // Of several coordinators sharing a database, one releases devices: the holder of the scheduler's lease.
  const lease = store instanceof PostgresStore
    ? new SchedulerLease({ store, onError: error => { init.logger.warn({ err: { name: error.name, message: error.message } }, 'the scheduler lease\'s connection failed; trying again') } })
    : new SoleLeadership()
  lease.on('changed', leader => { init.logger.info({ leader }, leader ? 'this coordinator runs the scheduler' : 'this coordinator no longer runs the scheduler') })
  const scheduler = new Scheduler({ tasks, devices, directory, logger: init.logger, autoTick: init.autoTick ?? true, leadership: lease })
  const assignments = new AssignmentService({ store, tasks, devices, manifests, keyring, certificates, windows, directory, installations, now, ...(init.pollIntervalSeconds !== undefined ? { pollIntervalSeconds: init.pollIntervalSeconds } : {}), ...(init.maxHeldAssignmentRequests !== undefined ? { maxHeldRequests: init.maxHeldAssignmentRequests } : {}), ...(init.reconnectsPerSecond !== undefined ? { reconnectsPerSecond: init.reconnectsPerSecond } : {}) })
  const contentAccess = new ContentAccess({
    findPackage: async id => await packages.find(id),
    openTasks: () => tasks.openTasks(),
    listFor: async device => await assignments.listFor(device),
    now
  })
  devices.on('changed', deviceId => { contentAccess.forget(deviceId) })
  // Status records' signatures are checked on worker threads, one per core.
  const verifiers = new VerifierPool()
  const statuses = new StatusService({
    store,
    now,
    lookupDevice: async id => await store.collections.devices.get(id),
    lookupTask: async id => await store.collections.tasks.get(id),
    isReleasedTo: (task, device) => tasks.releases.isReleased(task.id, device.id) && tasks.targets(device, task.targets),
    onRejected: rejection => { init.logger.warn(rejection, 'refused a status record') },
    // A device whose records come up through its site's relay is being heard from, though it sent nothing itself.
    onRelayed: heard => {
      for (const device of heard) {
        devices.touch(device, undefined).catch(error => { init.logger.error({ err: error, deviceId: device.id }, 'cannot note a relayed device\'s contact') })
      }
    },
    receiptKey: () => keyring.current,
    check: verifiers.check,
    progressChange: (previous, next) => tasks.progressChange(previous, next)
  })
  // A phased rollout moves on (or halts) as its devices report: the scheduler looks when one of its tasks hears news.
  statuses.on('conflicting', (deviceId, taskId) => {
    devices.noteConflictingRecord(deviceId).then(finding => {
      if (finding !== undefined) init.logger.warn({ deviceId, taskId, evidence: finding.evidence }, 'a device credential is used by two agents at once: it signed different status records under one sequence number')
    }).catch(error => { init.logger.error({ err: error, deviceId }, 'cannot flag a device whose credential is shared') })
  })
  statuses.on('records', records => {
    assignments.noteStatus(new Set(records.map(record => record.deviceId)))
    if (records.some(record => tasks.openTasks().some(task => task.id === record.taskId && task.phases !== undefined))) scheduler.soon()
    // What devices hold: a task for a package that supersedes one they gained may now target them.
    installations.note(records, async taskId => await tasks.get(taskId).catch(async () => await store.collections.tasks.get(taskId))).then(gained => { if (gained) scheduler.soon() }, error => {
      init.logger.error({ err: error }, 'cannot note which packages devices hold')
    })
  })
  const events = new EventJournal({
    store,
    now,
    ...(init.retainedEvents !== undefined ? { retainedEvents: init.retainedEvents } : {}),
    onWriteError: (error, dropped) => { init.logger.error({ err: error, dropped }, 'could not store operator events') }
  })
  await events.open()
  const unfollow = followOtherCoordinators({ store, tasks, devices, sites, windows, settings, directory, installations, contentAccess, assignments, logger: init.logger })
  if (lease instanceof SchedulerLease) await lease.start()
  const disconnectEvents = connectEventSources({ journal: events, statuses, tasks, devices, onError: error => { init.logger.error({ err: error }, 'could not describe a change for operators') } })
  const bootstrapAdminToken = await tokens.bootstrapAdmin()
  const credentials = new CredentialService({ store, vault: await CredentialVault.open(credentialKeyPath), now })
  const agentPackagesDir = init.agentPackagesDir ?? defaultAgentPackagesDir()
  let pushInstalls: PushService | undefined
  const installer = new HostInstaller({
    store, packages, content, tokens, agentPackagesDir, now,
    endpoint: () => pushInstalls?.endpoint() ?? {},
    ...(init.pushSleep !== undefined ? { sleep: init.pushSleep } : {})
  })
  pushInstalls = new PushService({
    store, credentials, packages, installer, agentPackagesDir, now,
    hostKeys: new HostKeyBook({ store, now }),
    transport: init.pushTransport ?? new SshTransport(),
    logger: init.logger,
    ...(init.pushQueue?.running !== undefined ? { runningPushes: init.pushQueue.running } : {}),
    ...(init.pushQueue?.queued !== undefined ? { queuedPushes: init.pushQueue.queued } : {}),
    ...(init.pushSleep !== undefined ? { sleep: init.pushSleep } : {})
  })
  await pushInstalls.open()
  const services: Services = {
    dataDir: init.dataDir,
    logger: init.logger,
    store,
    content,
    key,
    keyring,
    manifests,
    audit,
    tokens,
    devices,
    certificates,
    sites,
    packages,
    tasks,
    scheduler,
    directory,
    settings,
    publishers,
    requests,
    assignments,
    contentAccess,
    statuses,
    windows,
    events,
    credentials,
    pushInstalls,
    metrics: new CoordinatorMetrics({ devices, tasks, statuses, assignments }),
    startedAt: now(),
    close: async () => {
      await pushInstalls.close()
      disconnectEvents()
      unfollow()
      await scheduler.stop()
      if (lease instanceof SchedulerLease) await lease.stop()
      await events.flushed()
      events.close()
      await verifiers.close()
      await store.close()
    }
  }
  if (bootstrapAdminToken !== undefined) services.bootstrapAdminToken = bootstrapAdminToken
  return services
}
