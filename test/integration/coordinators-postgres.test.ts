import anyTest, { type TestFn } from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import supertest from 'supertest'
import { createApp } from '../../coordinator/http/app.js'
import { openServices, type Services } from '../../coordinator/services.js'
import { silentLogger } from '../../protocol/logger.js'
import { generateKeyPair, toHex } from '../../protocol/index.js'
import { TestPostgres, postgresSkipReason } from '../helpers/postgres.js'
import { waitFor } from '../helpers/processes.js'

const skipReason = postgresSkipReason()
const test = (skipReason === undefined ? anyTest.serial : anyTest.skip) as TestFn
if (skipReason !== undefined) console.log(`two-coordinator tests skipped: ${skipReason}`)

let server: TestPostgres | undefined
anyTest.before(async () => { if (skipReason === undefined) server = await TestPostgres.start() })
anyTest.after.always(async () => { await server?.stop() })

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n')

interface Node {
  services: Services
  http: ReturnType<typeof supertest>
  close: () => Promise<void>
}

/** A coordinator in this process on the shared database, with its own data folder and the shared content folder. */
async function coordinator (store: string, contentDir: string): Promise<Node> {
  const dataDir = await mkdtemp(join(tmpdir(), 'md-shared-'))
  const services = await openServices({ dataDir, store, contentDir, logger: silentLogger(), chunkSizeBytes: 64 * 1024 })
  const app = createApp(services)
  return {
    services,
    http: supertest(app.callback()),
    close: async () => {
      await services.close()
      await rm(dataDir, { recursive: true, force: true })
    }
  }
}

async function pair (t: { teardown: (fn: () => Promise<void>) => void }): Promise<{ a: Node, b: Node, adminToken: string }> {
  const store = await server!.createDatabase()
  const contentDir = await mkdtemp(join(tmpdir(), 'md-shared-content-'))
  const a = await coordinator(store, contentDir)
  const b = await coordinator(store, contentDir)
  t.teardown(async () => {
    await a.close()
    await b.close()
    await rm(contentDir, { recursive: true, force: true })
  })
  const adminToken = a.services.bootstrapAdminToken!
  t.teardown(async () => {})
  return { a, b, adminToken }
}

async function enroll (node: Node, adminToken: string, hostname: string): Promise<{ deviceId: string, credential: string }> {
  const { body: { token } } = await node.http.post('/v1/enrollment-tokens').set('authorization', `Bearer ${adminToken}`).send({}).expect(201)
  const key = generateKeyPair()
  const { body } = await node.http.post('/v1/agents/enroll').send({ token, publicKey: toHex(key.publicKey), hostname, platform: 'linux', arch: 'x64', site: 'berlin' }).expect(201)
  return { deviceId: body.deviceId, credential: body.credential }
}

test('coordinators of one database sign with one key, and only the first start makes an admin token', async t => {
  const { a, b, adminToken } = await pair(t)
  t.is(a.services.key.keyId, b.services.key.keyId)
  t.is(b.services.bootstrapAdminToken, undefined)
  // The token made on A authenticates on B.
  await b.http.get('/v1/tasks').set('authorization', `Bearer ${adminToken}`).expect(200)
})

test('a held assignments request on B answers as soon as a task is created on A', async t => {
  const { a, b, adminToken } = await pair(t)
  const device = await enroll(a, adminToken, 'pc-1')
  const { body: pkg } = await a.http.post('/v1/packages').set('authorization', `Bearer ${adminToken}`)
    .field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const { body: first } = await b.http.get('/v1/agents/assignments').set('authorization', `Bearer ${device.credential}`).expect(200)
  t.deepEqual(first.assignments, [])
  const held = b.http.get(`/v1/agents/assignments?waitSeconds=30&etag=${first.etag}`).set('authorization', `Bearer ${device.credential}`).then(response => response)
  // The request is held on B before the task exists.
  await new Promise(resolve => setTimeout(resolve, 200))
  const createdAt = Date.now()
  const { body: task } = await a.http.post('/v1/tasks').set('authorization', `Bearer ${adminToken}`).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const response = await held
  const elapsedMs = Date.now() - createdAt
  t.is(response.status, 200)
  t.deepEqual(response.body.assignments.map((assignment: { taskId: string }) => assignment.taskId), [task.id])
  t.true(elapsedMs < 1000, `the task reached the device held on B in ${elapsedMs} ms`)
  // The package uploaded through A is downloadable through B: the content folder is shared.
  const chunk = (await b.services.packages.find(pkg.id))!.chunks[0]
  const served = await b.http.get(`/v1/content/${chunk}`).set('authorization', `Bearer ${device.credential}`).buffer(true).expect(200)
  t.deepEqual(Buffer.from(served.body), SCRIPT)
  t.is(served.headers['cache-control'], 'private, max-age=31536000, immutable')
  t.is(served.headers.etag, `"${chunk}"`, 'a strong ETag: the content\'s hash')
  const fromA = await a.http.get(`/v1/content/${chunk}`).set('authorization', `Bearer ${device.credential}`).buffer(true).expect(200)
  t.is(fromA.headers.etag, served.headers.etag, 'the same on every coordinator')
  await b.http.get(`/v1/content/${chunk}`).set('authorization', `Bearer ${device.credential}`).set('if-none-match', served.headers.etag).expect(304)
  const part = await b.http.get(`/v1/content/${chunk}`).set('authorization', `Bearer ${device.credential}`).set('range', 'bytes=0-3').set('if-range', served.headers.etag).buffer(true).expect(206)
  t.deepEqual(Buffer.from(part.body), SCRIPT.subarray(0, 4))
  await b.http.get(`/v1/content/${chunk}`).set('authorization', `Bearer ${device.credential}`).set('range', 'bytes=0-3').set('if-range', '"other"').expect(200)
})

test('the event stream of either coordinator shows both coordinators\' events, with ids that only grow', async t => {
  const { a, b, adminToken } = await pair(t)
  const seenOnB: number[] = []
  const seenOnA: number[] = []
  b.services.events.on('appended', events => { for (const event of events) seenOnB.push(event.id) })
  a.services.events.on('appended', events => { for (const event of events) seenOnA.push(event.id) })
  // Both coordinators enroll devices at once: each enrollment is a device event.
  await Promise.all(Array.from({ length: 12 }, async (_, n) => { await enroll(n % 2 === 0 ? a : b, adminToken, `pc-${n}`) }))
  await a.services.events.flushed()
  await b.services.events.flushed()
  const total = await waitFor(async () => seenOnA.length >= 12 && seenOnB.length === seenOnA.length ? seenOnA.length : undefined, 'both streams to hold every event', 10_000)
  t.true(total >= 12)
  t.deepEqual(seenOnB, seenOnA, 'both coordinators announce the same events in the same order')
  for (let at = 1; at < seenOnA.length; at++) t.true(seenOnA[at] > seenOnA[at - 1], `ids only grow: ${seenOnA.join(',')}`)
  t.deepEqual(seenOnA, Array.from({ length: seenOnA.length }, (_, at) => seenOnA[0] + at), 'and skip none')
  // A client resuming on B from an id it saw on A gets the rest.
  const resumed = await b.services.events.resume(seenOnA[5], Number.MAX_SAFE_INTEGER, 100)
  t.is(resumed.kind, 'events')
  t.deepEqual(resumed.kind === 'events' ? resumed.events.map(event => event.id) : [], seenOnA.slice(6))
})

test('one coordinator releases devices under rate control; the other takes over when it stops', async t => {
  const { a, b, adminToken } = await pair(t)
  const leaders = [a, b].filter(node => (node.services.scheduler as any).leadership.isLeader)
  t.is(leaders.length, 1, 'exactly one coordinator leads')
  const devices = []
  for (let n = 0; n < 4; n++) devices.push(await enroll(a, adminToken, `pc-${n}`))
  const { body: pkg } = await a.http.post('/v1/packages').set('authorization', `Bearer ${adminToken}`)
    .field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const { body: task } = await b.http.post('/v1/tasks').set('authorization', `Bearer ${adminToken}`).send({ packageId: pkg.id, action: 'install', targets: { all: true }, devicesPerMinute: 2 }).expect(201)
  // Two per minute: two devices now, whichever coordinator the task was created on, and not four.
  await waitFor(async () => a.services.tasks.releases.count(task.id) === 2 && b.services.tasks.releases.count(task.id) === 2 ? true : undefined, 'both coordinators to know of two releases', 10_000)
  let records = 0
  for await (const record of a.services.store.collections.releases.values({ prefix: `${task.id}!` })) records += record.deviceIds.length
  t.is(records, 2, 'the release was recorded once')
  const leader = leaders[0]
  const other = leader === a ? b : a
  await leader.services.scheduler.stop()
  await (leader.services.scheduler as any).leadership.stop()
  await waitFor(async () => (other.services.scheduler as any).leadership.isLeader === true ? true : undefined, 'the other coordinator to take the lease', 10_000)
  t.false((leader.services.scheduler as any).leadership.isLeader, 'the stopped coordinator gave the lease up')
})
