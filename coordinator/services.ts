import { join } from 'node:path'
import { mkdir } from 'node:fs/promises'
import { ContentStore, DEFAULT_MAX_PACKAGE_BYTES, VerifierPool } from '../protocol/index.js'
import { TokenService } from './auth/tokens.js'
import { DeviceService } from './devices/service.js'
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
import { CoordinatorKeyring, type CoordinatorKey } from './signing-key.js'
import { ManifestSigner } from './manifest-signer.js'
import { AuditLog } from './audit/log.js'
import { LevelStore } from './store/level-store.js'
import type { Store } from './store/types.js'
import type { Logger } from '../protocol/logger.js'
import { CoordinatorMetrics } from './metrics.js'
import { EventJournal } from './events/journal.js'
import { connectEventSources } from './events/sources.js'

export interface ServicesInit {
  dataDir: string
  logger: Logger
  /** @default DEFAULT_MAX_PACKAGE_BYTES (8 GiB) */
  maxPackageBytes?: number
  /** @default 1 MiB */
  chunkSizeBytes?: number
  /** @default 30 */
  pollIntervalSeconds?: number
  /** Events kept for operators' clients that resume. @default DEFAULT_RETAINED_EVENTS */
  retainedEvents?: number
  /** The scheduler ticks by itself; tests with a fake clock call `scheduler.tick()` instead. @default true */
  autoTick?: boolean
  now?: () => number
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
  sites: SiteService
  packages: PackageService
  tasks: TaskService
  scheduler: Scheduler
  directory: DirectoryService
  settings: SettingsService
  publishers: PublisherService
  requests: RequestService
  assignments: AssignmentService
  statuses: StatusService
  /** The operators' live events (GET /v1/events). */
  events: EventJournal
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
  const store = await LevelStore.open(join(init.dataDir, 'db'))
  const content = new ContentStore(join(init.dataDir, 'content'))
  await content.open()
  const { keyring } = await CoordinatorKeyring.open(join(init.dataDir, 'signing-key.json'), now)
  const key = keyring.signer
  const manifests = new ManifestSigner(keyring)
  const audit = new AuditLog({ store, now })
  const tokens = new TokenService({ store, now })
  const sites = new SiteService({ store, now })
  await sites.open()
  const devices = new DeviceService({ store, now, siteForAddress: address => sites.siteForAddress(address) })
  sites.on('boundaries-changed', () => {
    devices.replaceAll().then(moved => {
      if (moved.length > 0) init.logger.info({ moved }, 'devices placed in other sites after a boundary change')
    }, error => { init.logger.error({ err: error }, 'cannot place devices after a boundary change') })
  })
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
  const removed = await packages.collectGarbage()
  if (removed > 0) init.logger.info({ removed }, 'removed chunks left by interrupted uploads')
  const tasks = new TaskService({ store, packages, devices, directory, settings, publishers, releases, key, now })
  await tasks.open()
  const requests = new RequestService({ store, packages, devices, tasks, settings, now })
  const scheduler = new Scheduler({ tasks, devices, directory, logger: init.logger, autoTick: init.autoTick ?? true })
  const assignments = new AssignmentService({ store, tasks, devices, manifests, keyring, ...(init.pollIntervalSeconds !== undefined ? { pollIntervalSeconds: init.pollIntervalSeconds } : {}) })
  // Status records' signatures are checked on worker threads, one per core.
  const verifiers = new VerifierPool()
  const statuses = new StatusService({
    store,
    now,
    lookupDevice: async id => await store.collections.devices.get(id),
    taskExists: async id => await store.collections.tasks.get(id) !== undefined,
    onRejected: rejection => { init.logger.warn(rejection, 'refused a status record') },
    // A device whose records come up through its site's relay is being heard from, though it sent nothing itself.
    onRelayed: heard => {
      for (const device of heard) {
        devices.touch(device, undefined).catch(error => { init.logger.error({ err: error, deviceId: device.id }, 'cannot note a relayed device\'s contact') })
      }
    },
    receiptKey: () => keyring.current,
    check: verifiers.check
  })
  const events = new EventJournal({
    store,
    now,
    ...(init.retainedEvents !== undefined ? { retainedEvents: init.retainedEvents } : {}),
    onWriteError: (error, dropped) => { init.logger.error({ err: error, dropped }, 'could not store operator events') }
  })
  await events.open()
  const disconnectEvents = connectEventSources({ journal: events, statuses, tasks, devices, onError: error => { init.logger.error({ err: error }, 'could not describe a change for operators') } })
  const bootstrapAdminToken = await tokens.bootstrapAdmin()
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
    sites,
    packages,
    tasks,
    scheduler,
    directory,
    settings,
    publishers,
    requests,
    assignments,
    statuses,
    events,
    metrics: new CoordinatorMetrics({ devices, tasks, statuses }),
    startedAt: now(),
    close: async () => {
      disconnectEvents()
      await scheduler.stop()
      await events.flushed()
      await verifiers.close()
      await store.close()
    }
  }
  if (bootstrapAdminToken !== undefined) services.bootstrapAdminToken = bootstrapAdminToken
  return services
}
