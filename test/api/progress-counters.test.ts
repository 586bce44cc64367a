import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import { signStatusRecord, type DeviceTaskState, type StatusRecord } from '../../protocol/index.js'
import { openServices } from '../../coordinator/services.js'
import { createApp } from '../../coordinator/http/app.js'
import { progressOf } from '../../coordinator/tasks/states.js'
import { progressMarker, progressPrefix } from '../../coordinator/tasks/progress.js'
import type { Services } from '../../coordinator/services.js'
import { silentLogger } from '../../protocol/logger.js'
import { enrollDevice, FakeClock, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n: ' + randomBytes(2000).toString('hex') + '\n')

async function report (c: TestCoordinator, device: EnrolledDevice, taskId: string, clock: FakeClock, fields: Partial<StatusRecord> & { state: DeviceTaskState, seq: number }): Promise<void> {
  const record: StatusRecord = {
    type: 'meshdeploy.status', deviceId: device.deviceId, taskId, revision: 1, attempt: 1, at: clock.now(),
    bytesTotal: 1000, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0, ...fields
  }
  const { body } = await c.http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential}`).send({ records: [signStatusRecord(record, device.key)] }).expect(200)
  if (body.rejected.length > 0) throw new Error(JSON.stringify(body.rejected))
}

/** Makes a task view fail if it reads a device row: progress must come from the counters. */
function forbidRowReads (services: Services): () => void {
  const rows = services.store.collections.deviceTasks
  const values = rows.values.bind(rows)
  const getMany = rows.getMany.bind(rows)
  rows.values = () => { throw new Error('a task view read the task\'s device rows') }
  rows.getMany = async () => { throw new Error('a task view read the task\'s device rows') }
  return () => {
    rows.values = values
    rows.getMany = getMany
  }
}

/** The task view's progress, read without touching a row, next to the fold of the task's rows it must equal. */
async function both (c: TestCoordinator, taskId: string): Promise<{ kept: any, folded: any }> {
  const allow = forbidRowReads(c.services)
  let kept
  try {
    kept = (await c.http.get(`/v1/tasks/${taskId}`).set('authorization', `Bearer ${c.adminToken}`).expect(200)).body.progress
  } finally {
    allow()
  }
  const folded = progressOf(await c.services.tasks.deviceRows(await c.services.tasks.get(taskId)))
  return { kept, folded }
}

/** A coordinator on a fake clock with one uploaded package and `count` enrolled devices. */
async function coordinatorWithDevices (t: ExecutionContext, count: number): Promise<{ clock: FakeClock, c: TestCoordinator, auth: string, pkg: any, devices: EnrolledDevice[] }> {
  const clock = new FakeClock()
  const c = await openTestCoordinator({ now: clock.now })
  t.teardown(async () => { await c.close().catch(() => {}) })
  const auth = `Bearer ${c.adminToken}`
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', auth)
    .field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const devices: EnrolledDevice[] = []
  for (let i = 0; i < count; i++) devices.push(await enrollDevice(c, { hostname: `pc-${i}` }))
  return { clock, c, auth, pkg, devices }
}

test('task progress is kept in counters as rows change: equal to the fold of the rows in every phase, read without a row', async t => {
  const { clock, c, auth, pkg, devices } = await coordinatorWithDevices(t, 8)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth)
    .send({ packageId: pkg.id, action: 'install', targets: { all: true }, devicesPerMinute: 6, validForSeconds: 3600, maxAttempts: 2 }).expect(201)
  t.is(task.releasedDevices, 6)
  const released = devices.filter(device => c.services.tasks.releases.isReleased(task.id, device.deviceId))

  let step = await both(c, task.id)
  t.deepEqual(step.kept, step.folded)
  t.like(step.kept, { total: 8, counts: { pending: 6, queued: 2 }, percent: 0 })

  const [a, b, d, e, f] = released
  await report(c, a, task.id, clock, { seq: 1, state: 'downloading', bytesDone: 250, bytesFromPeers: 200, bytesFromOrigin: 50 })
  await report(c, b, task.id, clock, { seq: 1, state: 'downloading', bytesDone: 500, bytesFromOrigin: 500 })
  await report(c, d, task.id, clock, { seq: 1, state: 'installing', bytesDone: 1000, bytesFromPeers: 1000 })
  await report(c, e, task.id, clock, { seq: 1, state: 'failed', bytesDone: 1000, exitCode: 1, retryAt: clock.now() + 60_000 })
  step = await both(c, task.id)
  t.deepEqual(step.kept, step.folded)
  t.like(step.kept, { total: 8, counts: { pending: 2, queued: 2, downloading: 2, installing: 1, failed: 1 }, bytesFromPeers: 1200, bytesFromOrigin: 550 })

  // Rows move on: each change leaves the bucket it was in.
  await report(c, a, task.id, clock, { seq: 2, state: 'succeeded', bytesDone: 1000, bytesFromPeers: 900, bytesFromOrigin: 100, exitCode: 0 })
  await report(c, d, task.id, clock, { seq: 2, state: 'succeeded-reboot-pending', bytesDone: 1000, bytesFromPeers: 1000, exitCode: 3010 })
  await report(c, e, task.id, clock, { seq: 2, attempt: 2, state: 'failed', bytesDone: 1000, exitCode: 1, final: true })
  await report(c, f, task.id, clock, { seq: 1, state: 'already-installed' })
  // A record older than the row changes nothing, in the row or the counters.
  await report(c, a, task.id, clock, { seq: 1, attempt: 1, state: 'downloading', bytesDone: 10 })
  step = await both(c, task.id)
  t.deepEqual(step.kept, step.folded)
  t.like(step.kept, { total: 8, settled: 4, succeeded: 3, failed: 1, counts: { succeeded: 1, 'succeeded-reboot-pending': 1, 'already-installed': 1, failed: 1, downloading: 1, pending: 1, queued: 2 } })

  // Paused, then expired, then cancelled: the same buckets show other states.
  await c.http.post(`/v1/tasks/${task.id}/pause`).set('authorization', auth).expect(200)
  step = await both(c, task.id)
  t.deepEqual(step.kept, step.folded)
  await c.http.post(`/v1/tasks/${task.id}/resume`).set('authorization', auth).expect(200)
  clock.advance(60_000)
  await c.services.scheduler.tick()
  step = await both(c, task.id)
  t.deepEqual(step.kept, step.folded)
  t.like(step.kept, { total: 8, counts: { pending: 3 } })
  t.is(step.kept.counts.queued, undefined, 'the last two were released')
  clock.advance(3600_000)
  step = await both(c, task.id)
  t.deepEqual(step.kept, step.folded)
  t.is(step.kept.counts.expired, 4)
  await c.http.post(`/v1/tasks/${task.id}/cancel`).set('authorization', auth).expect(200)
  step = await both(c, task.id)
  t.deepEqual(step.kept, step.folded)
})

test('a store whose tasks predate the counters gets them from one fold at start-up', async t => {
  const { clock, c, auth, pkg, devices } = await coordinatorWithDevices(t, 4)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  await report(c, devices[0], task.id, clock, { seq: 1, state: 'succeeded', bytesDone: 1000, bytesFromOrigin: 1000, exitCode: 0 })
  await report(c, devices[1], task.id, clock, { seq: 1, state: 'downloading', bytesDone: 300, bytesFromPeers: 300 })
  const before = (await c.http.get(`/v1/tasks/${task.id}`).set('authorization', auth).expect(200)).body.progress

  // What a store written before the counters holds: the rows, and no counter.
  const store = c.services.store
  const clear = []
  for (const prefix of [progressPrefix(task.id), progressMarker(task.id)]) {
    for (const item of (await store.counters.page({ prefix, limit: 5000 })).items) clear.push({ type: 'add' as const, counter: item.key, delta: -item.value })
  }
  t.true(clear.length > 1)
  await store.write(clear)
  t.is(await store.counters.get(progressMarker(task.id)), 0)
  await c.services.close()

  const services = await openServices({ dataDir: c.dataDir, ...(c.store !== undefined ? { store: c.store } : {}), logger: silentLogger(), now: clock.now, autoTick: false, chunkSizeBytes: 64 * 1024 })
  c.services = services
  t.teardown(async () => { await services.close().catch(() => {}) })
  c.http = (await import('supertest')).default(createApp(services).callback())
  t.is(await services.store.counters.get(progressMarker(task.id)), 1)
  const after = (await c.http.get(`/v1/tasks/${task.id}`).set('authorization', auth).expect(200)).body.progress
  t.deepEqual(after, before)
  t.like(after, { total: 4, succeeded: 1, counts: { succeeded: 1, downloading: 1, pending: 2 } })

  // And from then on the counters move with the rows.
  await report(c, devices[1], task.id, clock, { seq: 2, state: 'succeeded', bytesDone: 1000, bytesFromPeers: 1000, exitCode: 0 })
  const { kept, folded } = await both(c, task.id)
  t.deepEqual(kept, folded)
  t.is(kept.succeeded, 2)
})
