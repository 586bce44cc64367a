import test from 'ava'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openStatusReceipt, signStatusRecord, toBase64, trustKeys, utf8, type StatusRecord } from '../../protocol/index.js'
import { LevelStore } from '../../coordinator/store/level-store.js'
import { FakeClock, enrollDevice, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n: ' + randomBytes(1000).toString('hex') + '\n')

async function taskFor (c: TestCoordinator): Promise<{ taskId: string, sizeBytes: number }> {
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`)
    .field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', `Bearer ${c.adminToken}`).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  return { taskId: task.id, sizeBytes: pkg.sizeBytes }
}

function recordOf (device: EnrolledDevice, taskId: string, seq: number, state: StatusRecord['state'] = 'downloading', at = Date.now()): StatusRecord {
  return { type: 'meshdeploy.status', deviceId: device.deviceId, taskId, revision: 1, attempt: 1, seq, state, at, bytesTotal: 100, bytesDone: seq, bytesFromPeers: seq, bytesFromOrigin: 0 }
}

function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const swap = items[i]
    items[i] = items[j]
    items[j] = swap
  }
  return items
}

test('a relay\'s batch: each record verified against its own device\'s key; forged and altered ones refused; the relayed devices are heard from; the signed receipt names only what the devices may drop', async t => {
  const clock = new FakeClock()
  const c = await openTestCoordinator({ now: clock.now })
  try {
    const relay = await enrollDevice(c, { hostname: 'relay' })
    const b = await enrollDevice(c, { hostname: 'pc-b' })
    const d = await enrollDevice(c, { hostname: 'pc-d' })
    const { taskId } = await taskFor(c)
    clock.advance(10 * 60_000)
    const { body: before } = await c.http.get('/v1/devices').set('authorization', `Bearer ${c.adminToken}`).expect(200)
    t.false(before.devices.find((device: any) => device.id === b.deviceId).online, 'not heard from for ten minutes')
    const genuine = [signStatusRecord(recordOf(b, taskId, 1, 'downloading', clock.ms), b.key), signStatusRecord(recordOf(d, taskId, 1, 'downloading', clock.ms), d.key)]
    const forgedByRelay = signStatusRecord(recordOf(b, taskId, 2, 'succeeded', clock.ms), relay.key)
    const altered = { ...signStatusRecord(recordOf(d, taskId, 2, 'failed', clock.ms), d.key), payload: toBase64(utf8(JSON.stringify(recordOf(d, taskId, 2, 'succeeded', clock.ms)))) }
    const forNoTask = signStatusRecord({ ...recordOf(b, taskId, 3, 'downloading', clock.ms), taskId: 'no-such-task' }, b.key)
    const { body } = await c.http.post('/v1/agents/status').set('authorization', `Bearer ${relay.credential}`)
      .send({ records: [...genuine, forgedByRelay, altered, forNoTask], receipt: true }).expect(200)
    t.deepEqual(body.acknowledged, [`${b.deviceId}/${taskId}/1/1`, `${d.deviceId}/${taskId}/1/1`])
    t.deepEqual(body.rejected.map((rejection: any) => [rejection.index, rejection.reason]), [[2, 'unknown-key'], [3, 'bad-signature'], [4, 'unknown-task']])
    const receipt = openStatusReceipt(body.receipt, trustKeys(c.services.keyring.current.publicKey))
    t.is(receipt.relayDeviceId, relay.deviceId)
    t.deepEqual(receipt.acknowledged, body.acknowledged)
    // Records that do not verify are never named: the relay may have altered them, and their devices must keep their own copies.
    t.deepEqual(receipt.rejected, [{ key: `${b.deviceId}/no-such-task/1/3`, reason: 'unknown-task' }])
    const { body: after } = await c.http.get('/v1/devices').set('authorization', `Bearer ${c.adminToken}`).expect(200)
    for (const device of [b, d]) {
      const view = after.devices.find((candidate: any) => candidate.id === device.deviceId)
      t.true(view.online, 'a device whose records came through the relay is heard from')
      t.is(view.lastSeenAt, new Date(clock.ms).toISOString())
    }
    const { body: rows } = await c.http.get(`/v1/tasks/${taskId}/devices`).set('authorization', `Bearer ${c.adminToken}`).expect(200)
    t.is(rows.devices.find((row: any) => row.deviceId === b.deviceId).lastSeenAt, new Date(clock.ms).toISOString(), 'the task\'s device row shows when the device was last heard from')
    const { body: history } = await c.http.get(`/v1/tasks/${taskId}/devices/${d.deviceId}/history`).set('authorization', `Bearer ${c.adminToken}`).expect(200)
    t.deepEqual(history.records.map((record: StatusRecord) => [record.seq, record.state]), [[1, 'downloading']], 'the altered record was not stored')
  } finally {
    await c.close()
  }
})

test('concurrent batches with duplicates and in any order: every record stored once, rows and progress exactly the newest records', async t => {
  const c = await openTestCoordinator()
  try {
    const devices = [await enrollDevice(c), await enrollDevice(c), await enrollDevice(c)]
    const { taskId } = await taskFor(c)
    const last = 40
    const all = devices.flatMap(device => Array.from({ length: last }, (_, index) => signStatusRecord(recordOf(device, taskId, index + 1, index + 1 === last ? 'succeeded' : 'downloading'), device.key)))
    const events = new Map<string, number[]>()
    c.services.statuses.on('records', records => { for (const record of records) events.set(record.deviceId, [...events.get(record.deviceId) ?? [], record.seq]) })
    // Each record goes in two to three batches, shuffled; the batches race each other.
    const batches: typeof all[] = []
    for (let round = 0; round < 3; round++) {
      const shuffled = shuffle(round < 2 ? [...all] : all.filter((_, index) => index % 3 === 0))
      for (let start = 0; start < shuffled.length; start += 17) batches.push(shuffled.slice(start, start + 17))
    }
    const answers = await Promise.all(shuffle(batches).map(async (records, index) => (await c.http.post('/v1/agents/status')
      .set('authorization', `Bearer ${devices[index % devices.length].credential}`).send({ records }).expect(200)).body))
    const sent = batches.reduce((sum, batch) => sum + batch.length, 0)
    t.is(answers.reduce((sum, answer) => sum + answer.acknowledged.length, 0), sent, 'every record acknowledged, each time it was sent')
    t.is(answers.reduce((sum, answer) => sum + answer.duplicates, 0), sent - all.length, 'all but the first copy of each were duplicates')
    const { body: view } = await c.http.get(`/v1/tasks/${taskId}`).set('authorization', `Bearer ${c.adminToken}`).expect(200)
    t.is(view.progress.counts.succeeded, devices.length)
    t.is(view.progress.bytesFromPeers, devices.length * last)
    for (const device of devices) {
      const { body: history } = await c.http.get(`/v1/tasks/${taskId}/devices/${device.deviceId}/history`).set('authorization', `Bearer ${c.adminToken}`).expect(200)
      t.deepEqual(history.records.map((record: StatusRecord) => record.seq), Array.from({ length: last }, (_, index) => index + 1))
    }
    const { body: rows } = await c.http.get(`/v1/tasks/${taskId}/devices`).set('authorization', `Bearer ${c.adminToken}`).expect(200)
    t.deepEqual(rows.devices.map((row: any) => [row.seq, row.state]), devices.map(() => [last, 'succeeded']))
    for (const device of devices) {
      const seqs = events.get(device.deviceId) ?? []
      t.true(seqs.every((seq, index) => index === 0 || seq > seqs[index - 1]), `operators' events never take ${device.deviceId} backwards (${seqs.join(',')})`)
      t.is(seqs.at(-1), last)
    }
  } finally {
    await c.close()
  }
})

test('a different record under a stored record\'s key is verified, not waved through as a duplicate', async t => {
  const c = await openTestCoordinator()
  try {
    const device = await enrollDevice(c)
    const other = await enrollDevice(c)
    const { taskId } = await taskFor(c)
    const original = signStatusRecord(recordOf(device, taskId, 1), device.key)
    await c.http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential}`).send({ records: [original] }).expect(200)
    const { body: same } = await c.http.post('/v1/agents/status').set('authorization', `Bearer ${other.credential}`).send({ records: [original] }).expect(200)
    t.is(same.duplicates, 1, 'the same bytes again: a duplicate')
    const altered = { ...original, payload: toBase64(utf8(JSON.stringify(recordOf(device, taskId, 1, 'failed')))) }
    const { body } = await c.http.post('/v1/agents/status').set('authorization', `Bearer ${other.credential}`).send({ records: [altered] }).expect(200)
    t.deepEqual(body.acknowledged, [])
    t.is(body.rejected[0].reason, 'bad-signature')
  } finally {
    await c.close()
  }
})

test('writes that arrive together share one durable write; one caller\'s bad operation fails only that caller', async t => {
  const folder = await mkdtemp(join(tmpdir(), 'md-level-store-'))
  const store = await LevelStore.open(join(folder, 'db'))
  try {
    const put = (key: string, value: unknown): Parameters<LevelStore['write']>[0][number] => ({ type: 'put', collection: 'meta', key, value })
    const outcomes = await Promise.allSettled([
      store.write([put('a', 1)]),
      store.write([put('b', 2), put('c', 3)]),
      store.write([put('d', undefined)]),
      store.write([put('e', 5), { type: 'del', collection: 'meta', key: 'a' }])
    ])
    t.deepEqual(outcomes.map(outcome => outcome.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
    t.deepEqual(await store.collections.meta.getMany(['a', 'b', 'c', 'd', 'e']), [undefined, 2, 3, undefined, 5])
  } finally {
    await store.close()
    await rm(folder, { recursive: true, force: true })
  }
})
