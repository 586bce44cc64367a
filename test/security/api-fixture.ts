import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import { createCoordinatorServer } from '../../coordinator/http/server.js'
import type { CoordinatorApp } from '../../coordinator/http/app.js'
import { resolveHttpLimits, type HttpLimitsInit } from '../../coordinator/http/request-limits.js'
import { collect } from '../../coordinator/store/level-store.js'
import { enrollDevice, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

export const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n')

/** A clock the test moves by hand. */
export interface ManualClock {
  now: () => number
  advance: (ms: number) => void
}

export function manualClock (start = Date.now()): ManualClock {
  let time = start
  return { now: () => time, advance: ms => { time += ms } }
}

/**
 * A coordinator with every kind of caller a bad-input case needs: tokens of
 * each role, a revoked and an expired token, an active, a blocked and a
 * retired device, a package and a task.
 */
export interface ApiFixture {
  c: TestCoordinator
  clock: ManualClock
  admin: string
  operator: string
  viewer: string
  revoked: string
  expired: string
  device: EnrolledDevice
  blocked: EnrolledDevice
  retired: EnrolledDevice
  packageId: string
  taskId: string
  /** Serves the app on a loopback port, with the coordinator's slow-client bounds. */
  listen: () => Promise<{ port: number, server: Server }>
  close: () => Promise<void>
}

export interface FixtureInit {
  limits?: HttpLimitsInit
  /** @default 200_000 */
  maxPackageBytes?: number
}

export async function openApiFixture (init: FixtureInit = {}): Promise<ApiFixture> {
  const clock = manualClock()
  const c = await openTestCoordinator({ now: clock.now, maxPackageBytes: init.maxPackageBytes ?? 200_000, limits: { now: clock.now } })
  const as = (token: string): string => `Bearer ${token}`
  const token = async (name: string, role: string, extra: object = {}): Promise<string> =>
    (await c.http.post('/v1/tokens').set('authorization', as(c.adminToken)).send({ name, role, ...extra }).expect(201)).body.token
  const operator = await token('ops', 'operator')
  const viewer = await token('dashboard', 'viewer')
  const revoked = await token('former-colleague', 'operator')
  const revokedId = (await c.http.get('/v1/tokens').set('authorization', as(c.adminToken))).body.tokens.find((t: any) => t.name === 'former-colleague').id
  await c.http.post(`/v1/tokens/${revokedId}/revoke`).set('authorization', as(c.adminToken)).expect(200)
  const expired = await token('contractor', 'operator', { expiresInSeconds: 60 })
  clock.advance(61_000)
  const device = await enrollDevice(c, { hostname: 'pc-active' })
  const blocked = await enrollDevice(c, { hostname: 'pc-blocked' })
  const retired = await enrollDevice(c, { hostname: 'pc-retired' })
  await c.http.post(`/v1/devices/${blocked.deviceId}/block`).set('authorization', as(operator)).send({ reason: 'lost laptop' }).expect(200)
  await c.http.post(`/v1/devices/${retired.deviceId}/retire`).set('authorization', as(operator)).expect(200)
  const pkg = await c.http.post('/v1/packages').set('authorization', as(operator))
    .field('metadata', JSON.stringify({ name: 'tool', version: '1' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const task = await c.http.post('/v1/tasks').set('authorization', as(operator)).send({ packageId: pkg.body.id, action: 'install', targets: { all: true } }).expect(201)
  // The case's limits start now, with the fixture's own requests not counted against them.
  Object.assign((c.app as CoordinatorApp).limits, resolveHttpLimits({ now: clock.now, ...init.limits }))
  let server: Server | undefined
  return {
    c,
    clock,
    admin: c.adminToken,
    operator,
    viewer,
    revoked,
    expired,
    device,
    blocked,
    retired,
    packageId: pkg.body.id,
    taskId: task.body.id,
    listen: async () => {
      server = createCoordinatorServer(c.app as CoordinatorApp)
      await new Promise<void>(resolve => { server!.listen(0, '127.0.0.1', () => { resolve() }) })
      return { port: (server.address() as AddressInfo).port, server }
    },
    close: async () => {
      if (server !== undefined) {
        server.closeAllConnections()
        await new Promise<void>(resolve => { server!.close(() => { resolve() }) })
      }
      await c.close()
    }
  }
}

/** Everything a refused request must leave as it was. */
export async function snapshot (c: TestCoordinator): Promise<unknown> {
  const store = c.services.store.collections
  const contentRoot = join(c.dataDir, 'content')
  const content: string[] = []
  for (const prefix of await readdir(contentRoot)) if (prefix !== 'tmp') content.push(...await readdir(join(contentRoot, prefix)))
  return {
    packages: (await collect(store.packages.values())).map(p => [p.id, p.fileName]),
    tasks: (await collect(store.tasks.values())).map(task => [task.id, task.status, task.revision]),
    devices: (await collect(store.devices.values())).map(device => [device.id, device.status]),
    credentials: (await collect(store.credentials.entries())).length,
    deviceTasks: (await collect(store.deviceTasks.values())).map(row => [row.taskId, row.deviceId, row.state, row.seq]),
    statusLog: (await collect(store.statusLog.entries())).length,
    operatorTokens: (await collect(store.operatorTokens.values())).map(token => [token.id, token.revokedAt ?? null]),
    enrollmentTokens: (await collect(store.enrollmentTokens.values())).map(token => [token.id, token.uses, token.revokedAt ?? null]),
    audit: (await collect(store.audit.entries())).length,
    content: content.sort(),
    keyId: c.services.keyring.current.keyId
  }
}
