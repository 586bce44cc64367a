import anyTest, { type TestFn } from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import supertest from 'supertest'
import { createApp } from '../../coordinator/http/app.js'
import { openServices, type Services } from '../../coordinator/services.js'
import { silentLogger } from '../../protocol/logger.js'
import { generateKeyPair, signStatusRecord, toHex, type StatusRecord } from '../../protocol/index.js'
import { TestPostgres, postgresSkipReason } from '../helpers/postgres.js'
import { runCli } from '../helpers/processes.js'

const skipReason = postgresSkipReason()
const test = (skipReason === undefined ? anyTest.serial : anyTest.skip) as TestFn
if (skipReason !== undefined) console.log(`migration tests skipped: ${skipReason}`)

let server: TestPostgres | undefined
anyTest.before(async () => { if (skipReason === undefined) server = await TestPostgres.start() })
anyTest.after.always(async () => { await server?.stop() })

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n')

async function snapshot (services: Services, auth: string): Promise<unknown> {
  const http = supertest(createApp(services).callback())
  const { body: { packages } } = await http.get('/v1/packages').set('authorization', auth).expect(200)
  const { body: { tasks } } = await http.get('/v1/tasks').set('authorization', auth).expect(200)
  const { body: { devices } } = await http.get('/v1/devices').set('authorization', auth).expect(200)
  const { body: { tokens } } = await http.get('/v1/tokens').set('authorization', auth).expect(200)
  const histories = []
  for (const task of tasks) {
    for (const device of devices) {
      const { body } = await http.get(`/v1/tasks/${task.id as string}/devices/${device.id as string}/history`).set('authorization', auth).expect(200)
      histories.push(body.records)
    }
  }
  const manifests = []
  for (const task of tasks) manifests.push((await services.store.collections.tasks.get(task.id))!.manifest)
  return {
    packages: packages.map((pkg: any) => [pkg.id, pkg.sha256, pkg.chunks?.length]),
    tasks: tasks.map((task: any) => [task.id, task.status, task.revision, task.progress]),
    devices: devices.map((device: any) => [device.id, device.hostname, device.site, device.status, device.peerId]),
    tokens: tokens.map((token: any) => [token.id, token.name, token.role]),
    histories,
    manifests
  }
}

test('a level store with packages, tasks, devices, tokens and status history moves into PostgreSQL whole, manifests byte for byte; a second run copies nothing again', async t => {
  const dataDir = await mkdtemp(join(tmpdir(), 'md-migrate-'))
  t.teardown(async () => { await rm(dataDir, { recursive: true, force: true }) })
  const level = await openServices({ dataDir, logger: silentLogger(), chunkSizeBytes: 64 * 1024 })
  const adminToken = level.bootstrapAdminToken!
  const auth = `Bearer ${adminToken}`
  const http = supertest(createApp(level).callback())
  await http.post('/v1/tokens').set('authorization', auth).send({ name: 'night-shift', role: 'viewer' }).expect(201)
  const { body: { token } } = await http.post('/v1/enrollment-tokens').set('authorization', auth).send({}).expect(201)
  const key = generateKeyPair()
  const { body: device } = await http.post('/v1/agents/enroll').send({ token, publicKey: toHex(key.publicKey), hostname: 'pc-1', platform: 'linux', arch: 'x64', site: 'berlin' }).expect(201)
  const { body: pkg } = await http.post('/v1/packages').set('authorization', auth).field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const { body: task } = await http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const record = (seq: number, state: StatusRecord['state']): StatusRecord => ({
    type: 'meshdeploy.status', deviceId: device.deviceId, taskId: task.id, revision: 1, attempt: 1, seq, state, at: Date.now(), bytesTotal: pkg.sizeBytes, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0
  })
  await http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential as string}`).send({ records: [signStatusRecord(record(1, 'downloading'), key), signStatusRecord(record(2, 'succeeded'), key)] }).expect(200)
  const before = await snapshot(level, auth)
  const keyId = level.key.keyId
  await level.close()

  const url = await server!.createDatabase()
  const first = await runCli(['coordinator', 'migrate', '--from-data', dataDir, '--to', url, '--json'], {})
  t.is(first.code, 0, first.stderr)
  const report = JSON.parse(first.stdout)
  t.true(report.verified)
  t.true(report.collections.find((entry: any) => entry.collection === 'statusLog').target >= 2)
  const second = await runCli(['coordinator', 'migrate', '--from-data', dataDir, '--to', url, '--json'], {})
  t.is(second.code, 0, second.stderr)
  t.true(JSON.parse(second.stdout).collections.every((entry: any) => entry.copiedNow === 0), 'a finished copy is not made again')

  const newDataDir = await mkdtemp(join(tmpdir(), 'md-migrated-'))
  t.teardown(async () => { await rm(newDataDir, { recursive: true, force: true }) })
  const moved = await openServices({ dataDir: newDataDir, store: url, contentDir: join(dataDir, 'content'), logger: silentLogger() })
  t.teardown(async () => { await moved.close() })
  t.is(moved.key.keyId, keyId, 'the signing key came along: agents keep trusting the coordinator')
  t.is(moved.bootstrapAdminToken, undefined, 'the tokens came along: no new admin token')
  t.deepEqual(await snapshot(moved, auth), before)
})

test('a copy into a database that another coordinator already uses is refused', async t => {
  const url = await server!.createDatabase()
  const dataDir = await mkdtemp(join(tmpdir(), 'md-migrate-'))
  const used = await mkdtemp(join(tmpdir(), 'md-migrate-used-'))
  t.teardown(async () => { await rm(dataDir, { recursive: true, force: true }); await rm(used, { recursive: true, force: true }) })
  await (await openServices({ dataDir, logger: silentLogger() })).close()
  await (await openServices({ dataDir: used, store: url, logger: silentLogger() })).close()
  const result = await runCli(['coordinator', 'migrate', '--from-data', dataDir, '--to', url], {})
  t.is(result.code, 1)
  t.regex(result.stderr, /already holds a coordinator's records/)
})
