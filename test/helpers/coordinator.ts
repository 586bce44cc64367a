import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import supertest from 'supertest'
import { createApp, type CoordinatorApp } from '../../coordinator/http/app.js'
import type { HttpLimitsInit } from '../../coordinator/http/request-limits.js'
import { openServices, type Services, type ServicesInit } from '../../coordinator/services.js'
import { sharedTestDatabase, testStoreFromEnvironment } from './postgres.js'
import { silentLogger, type Logger } from '../../protocol/logger.js'
import { generateKeyPair, toHex, type Ed25519KeyPair } from '../../protocol/index.js'

export interface TestCoordinator {
  dataDir: string
  /** The store address when it is not level (the suites' run on PostgreSQL): a reopen passes it again. */
  store?: string
  services: Services
  app: CoordinatorApp
  http: ReturnType<typeof supertest>
  adminToken: string
  close: () => Promise<void>
}

export interface TestCoordinatorInit {
  maxPackageBytes?: number
  chunkSizeBytes?: number
  now?: () => number
  limits?: HttpLimitsInit
  /** The scheduler ticks by itself; @default false with a fake clock (tests call scheduler.tick()), true otherwise */
  autoTick?: boolean
  /** @default silent */
  logger?: Logger
  /** Anything else the services take (push transports, queues, folders). */
  services?: Partial<ServicesInit>
}

/** A coordinator in this process on a temporary folder, driven through app.callback() (no port). */
export async function openTestCoordinator (init: TestCoordinatorInit = {}): Promise<TestCoordinator> {
  const dataDir = await mkdtemp(join(tmpdir(), 'md-coordinator-'))
  const store = testStoreFromEnvironment() === 'postgres' && init.services?.store === undefined ? await sharedTestDatabase() : init.services?.store
  const services = await openServices({
    ...(store !== undefined ? { store } : {}),
    dataDir,
    logger: init.logger ?? silentLogger(),
    ...(init.maxPackageBytes !== undefined ? { maxPackageBytes: init.maxPackageBytes } : {}),
    chunkSizeBytes: init.chunkSizeBytes ?? 64 * 1024,
    ...(init.now !== undefined ? { now: init.now } : {}),
    autoTick: init.autoTick ?? init.now === undefined,
    ...init.services
  })
  const app = createApp(services, init.limits !== undefined ? { limits: init.limits } : {})
  const adminToken = services.bootstrapAdminToken ?? ''
  return {
    dataDir,
    ...(store !== undefined ? { store } : {}),
    services,
    app,
    http: supertest(app.callback()),
    adminToken,
    close: async () => {
      await services.close()
      await rm(dataDir, { recursive: true, force: true })
    }
  }
}

export interface EnrolledDevice {
  deviceId: string
  credential: string
  key: Ed25519KeyPair
}

export async function enrollDevice (coordinator: TestCoordinator, fields: { hostname?: string, site?: string, groups?: string[], platform?: string } = {}): Promise<EnrolledDevice> {
  // The token grants the groups the device names: a device cannot put itself in groups its token does not grant.
  const { body: { token } } = await coordinator.http.post('/v1/enrollment-tokens').set('authorization', `Bearer ${coordinator.adminToken}`)
    .send(fields.groups !== undefined ? { groups: fields.groups } : {}).expect(201)
  const key = generateKeyPair()
  const { body } = await coordinator.http.post('/v1/agents/enroll').send({
    token,
    publicKey: toHex(key.publicKey),
    hostname: fields.hostname ?? `host-${Math.random().toString(36).slice(2, 8)}`,
    platform: fields.platform ?? 'linux',
    arch: 'x64',
    ...(fields.site !== undefined ? { site: fields.site } : {}),
    ...(fields.groups !== undefined ? { groups: fields.groups } : {})
  }).expect(201)
  return { deviceId: body.deviceId, credential: body.credential, key }
}

/** A clock tests move by hand. */
export class FakeClock {
  constructor (public ms = Date.parse('2026-03-02T09:00:00.000Z')) {}
  readonly now = (): number => this.ms
  advance (ms: number): void {
    this.ms += ms
  }
}
