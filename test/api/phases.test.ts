import test from 'ava'
import { randomBytes } from 'node:crypto'
import { signStatusRecord, type DeviceTaskState, type StatusRecord } from '../../protocol/index.js'
import { enrollDevice, FakeClock, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n: ' + randomBytes(500).toString('hex') + '\n')

async function report (c: TestCoordinator, device: EnrolledDevice, taskId: string, state: DeviceTaskState, clock: FakeClock): Promise<void> {
  const record: StatusRecord = {
    type: 'meshdeploy.status', deviceId: device.deviceId, taskId, revision: 1, attempt: 1, seq: 1, at: clock.now(),
    bytesTotal: 100, bytesDone: 100, bytesFromPeers: 0, bytesFromOrigin: 100, ...(state === 'failed' ? { exitCode: 1, final: true } : {}), state
  }
  const { body } = await c.http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential}`).send({ records: [signStatusRecord(record, device.key)] }).expect(200)
  if (body.rejected.length > 0) throw new Error(JSON.stringify(body.rejected))
}

test('a phased rollout releases ring by ring: promoted by its success threshold after its soak, halted by failures, promoted by hand (fake clock)', async t => {
  const clock = new FakeClock()
  const c = await openTestCoordinator({ now: clock.now })
  t.teardown(async () => { await c.close() })
  const auth = `Bearer ${c.adminToken}`
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', auth).field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const devices = new Map<string, EnrolledDevice>()
  for (let index = 0; index < 2; index++) devices.set(`pilot-${index}`, await enrollDevice(c, { hostname: `pilot-${index}`, groups: ['pilot'] }))
  for (let index = 0; index < 20; index++) devices.set(`pc-${index}`, await enrollDevice(c, { hostname: `pc-${index}` }))

  const phases = [
    { name: 'pilot', groups: ['pilot'], successPercent: 100, minSoakSeconds: 3600 },
    { name: 'broad', percent: 50, successPercent: 90, maxFailurePercent: 20 },
    { name: 'everyone' }
  ]
  const { body: created } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true }, phases }).expect(201)
  const view = async (): Promise<any> => (await c.http.get(`/v1/tasks/${created.id}`).set('authorization', auth).expect(200)).body
  const rows = async (): Promise<any[]> => (await c.http.get(`/v1/tasks/${created.id}/devices`).set('authorization', auth).expect(200)).body.devices
  t.is(created.releasedDevices, 2, 'only the pilot ring is released')
  t.like(created.rings[0], { name: 'pilot', status: 'active', total: 2 })
  const broadTotal = created.rings[1].total
  t.true(broadTotal > 0 && broadTotal < 20, `the broad ring holds about half of the 20 others by stable hashing (${broadTotal})`)
  t.is(created.rings[2].total, 20 - broadTotal)
  t.deepEqual((await rows()).filter(row => row.state === 'queued').map(row => row.ring).sort(), [...Array(20 - broadTotal).fill(2), ...Array(broadTotal).fill(1)].sort(), 'devices of later rings wait')

  // The pilot succeeds; the next ring waits for the pilot's soak time.
  for (const name of ['pilot-0', 'pilot-1']) await report(c, devices.get(name)!, created.id, 'succeeded', clock)
  await c.services.scheduler.tick()
  t.like((await view()).rings[0], { status: 'active', succeeded: 2, percentSucceeded: 100, soakUntil: new Date(clock.now() + 3600_000).toISOString() })
  clock.advance(3600_000)
  await c.services.scheduler.tick()
  await c.services.scheduler.tick()
  let current = await view()
  t.like(current.rings[0], { status: 'done' })
  t.regex(current.rings[0].promotedBy, /^automatic: 2 of 2 device\(s\) of pilot succeeded/)
  t.like(current.rings[1], { status: 'active' })
  t.is(current.releasedDevices, 2 + broadTotal, 'the broad ring is released')

  // Failures above the broad ring's threshold halt the rollout: nobody else is released.
  const broad = (await rows()).filter(row => row.ring === 1)
  const failing = Math.floor(broad.length * 0.2) + 1
  for (const row of broad.slice(0, failing)) await report(c, devices.get(row.hostname)!, created.id, 'failed', clock)
  await c.services.scheduler.tick()
  current = await view()
  t.is(current.phase, 'paused')
  t.is(current.halted.by, 'automatic')
  t.regex(current.halted.reason, new RegExp(`${failing} of ${broad.length} device\\(s\\) of broad failed`))
  t.is(current.releasedDevices, 2 + broadTotal)
  const { body: assignments } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${devices.get(broad[broad.length - 1].hostname)!.credential}`).expect(200)
  t.is(assignments.assignments[0]?.mode, 'finish', 'a halted task starts nothing new on devices')

  // The operator goes on by hand: the last ring starts and the halt ends.
  const { body: promoted } = await c.http.post(`/v1/tasks/${created.id}/phases/next`).set('authorization', auth).expect(200)
  t.is(promoted.phase, 'running')
  t.is(promoted.halted, undefined)
  t.like(promoted.rings[2], { status: 'active', total: 20 - broadTotal })
  t.is(promoted.releasedDevices, 22)
  t.is((await c.http.post(`/v1/tasks/${created.id}/phases/next`).set('authorization', auth).expect(409)).body.reason, 'last-phase')

  // An operator's halt, then a resume.
  const { body: halted } = await c.http.post(`/v1/tasks/${created.id}/halt`).set('authorization', auth).send({ reason: 'help desk calls' }).expect(200)
  t.like(halted, { phase: 'paused', halted: { reason: 'help desk calls' } })
  t.is((await c.http.post(`/v1/tasks/${created.id}/resume`).set('authorization', auth).expect(200)).body.phase, 'running')

  const { body: invalid } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true }, phases: [{ percent: 60 }, { percent: 50 }, {}] }).expect(400)
  t.regex(JSON.stringify(invalid.errors), /more than 100/)
})
