import test from 'ava'
import { randomBytes } from 'node:crypto'
import { signStatusRecord, type StatusRecord } from '../../protocol/index.js'
import { waitFor } from '../helpers/processes.js'
import { enrollDevice, FakeClock, openTestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n: ' + randomBytes(2000).toString('hex') + '\n')

test('a held request woken by a release reads no device row; a stored status record makes the next answer read them again', async t => {
  const clock = new FakeClock()
  const c = await openTestCoordinator({ now: clock.now })
  t.teardown(async () => { await c.close().catch(() => {}) })
  const auth = `Bearer ${c.adminToken}`
  const device = await enrollDevice(c, { hostname: 'pc-a' })
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', auth)
    .field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  // A task the device is not in: its answers read its row of that task.
  const other = await enrollDevice(c, { hostname: 'pc-b' })
  await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { deviceIds: [other.deviceId] } }).expect(201)

  const rows = c.services.store.collections.deviceTasks
  const getMany = rows.getMany.bind(rows)
  const readKeys: string[] = []
  rows.getMany = async keys => {
    readKeys.push(...keys.filter(key => key.endsWith(`!${device.deviceId}`)))
    return await getMany(keys)
  }
  const credential = `Bearer ${device.credential}`
  const { body: first } = await c.http.get('/v1/agents/assignments').set('authorization', credential).expect(200)
  t.deepEqual(first.assignments, [])
  t.is(readKeys.length, 1, 'the first answer reads the device\'s row of the task it is not in')

  const held = c.http.get(`/v1/agents/assignments?waitSeconds=30&etag=${first.etag as string}`).set('authorization', credential).then(response => response)
  await waitFor(async () => c.services.assignments.heldRequests === 1 ? true : undefined, 'the request to be held', 10_000, 10)
  clock.advance(1000)
  const woken = c.services.assignments.wokenRequests()
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const answer = await held
  t.deepEqual(answer.body.assignments.map((assignment: any) => assignment.taskId), [task.id])
  t.is(c.services.assignments.wokenRequests() - woken, 1)
  t.is(readKeys.length, 1, 'the wake read no row: the task is newer than the rows remembered, and no record came since')

  // The device reports success: its rows are read again, and the finished task leaves its answer.
  clock.advance(1000)
  const record: StatusRecord = {
    type: 'meshdeploy.status', deviceId: device.deviceId, taskId: task.id, revision: 1, attempt: 1, seq: 1, state: 'succeeded', at: clock.now(),
    bytesTotal: pkg.sizeBytes, bytesDone: pkg.sizeBytes, bytesFromPeers: 0, bytesFromOrigin: pkg.sizeBytes, exitCode: 0
  }
  await c.http.post('/v1/agents/status').set('authorization', credential).send({ records: [signStatusRecord(record, device.key)] }).expect(200)
  const before = readKeys.length
  const { body: after } = await c.http.get('/v1/agents/assignments').set('authorization', credential).expect(200)
  t.true(readKeys.length > before, 'a stored record makes the answer read the rows again')
  t.deepEqual(after.assignments, [], 'the succeeded task is no longer assigned')
})
