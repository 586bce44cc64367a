import test from 'ava'
import { signStatusRecord, type StatusRecord } from '../../protocol/index.js'
import { enrollDevice, openTestCoordinator } from '../helpers/coordinator.js'

function metric (text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find(candidate => candidate.startsWith(`${name}${labels} `) || (labels === '' && candidate.startsWith(`${name} `)))
  return line === undefined ? undefined : Number(line.split(' ').pop())
}

test('metrics count devices, task states, status records and origin bytes', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  const device = await enrollDevice(c, { hostname: 'pc-1' })
  await enrollDevice(c, { hostname: 'pc-2' })
  const script = Buffer.from('#!/bin/sh\necho metrics\n')
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', auth).field('metadata', JSON.stringify({ name: 'm', version: '1' })).attach('file', script, 'm.sh').expect(201)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const { body: shown } = await c.http.get(`/v1/packages/${pkg.id}?chunks=true`).set('authorization', auth)
  await c.http.get(`/v1/content/${shown.chunks[0]}`).set('authorization', `Bearer ${device.credential}`).expect(200)
  const record: StatusRecord = { type: 'meshdeploy.status', deviceId: device.deviceId, taskId: task.id, revision: 1, attempt: 1, seq: 1, state: 'succeeded', at: Date.now(), bytesTotal: script.byteLength, bytesDone: script.byteLength, bytesFromPeers: 0, bytesFromOrigin: script.byteLength }
  const envelope = signStatusRecord(record, device.key)
  await c.http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential}`).send({ records: [envelope, envelope] }).expect(200)

  const unauthenticated = await c.http.get('/metrics')
  t.is(unauthenticated.status, 401)
  const response = await c.http.get('/metrics').set('authorization', auth).expect(200)
  t.regex(response.headers['content-type'], /text\/plain/)
  const text = response.text
  t.is(metric(text, 'meshdeploy_origin_bytes_served_total'), script.byteLength)
  t.is(metric(text, 'meshdeploy_origin_requests_total'), 1)
  t.is(metric(text, 'meshdeploy_status_records_total', '{outcome="stored"}'), 1)
  t.is(metric(text, 'meshdeploy_status_records_total', '{outcome="duplicate"}'), 1)
  t.is(metric(text, 'meshdeploy_devices', '{status="active",online="true"}'), 2)
  t.is(metric(text, 'meshdeploy_task_devices', '{state="succeeded"}'), 1)
  t.is(metric(text, 'meshdeploy_task_devices', '{state="pending"}'), 1)
  t.is(metric(text, 'meshdeploy_tasks', '{status="active"}'), 1)
  t.truthy(metric(text, 'meshdeploy_coordinator_process_resident_memory_bytes'))
  t.is(metric(text, 'meshdeploy_assignment_requests_held'), 0)
  t.is(metric(text, 'meshdeploy_assignment_requests_woken_total'), 0)

  // A third device, blocked: counted by status from the store's index, never online.
  const third = await enrollDevice(c, { hostname: 'pc-3' })
  await c.http.post(`/v1/devices/${third.deviceId}/block`).set('authorization', auth).send({}).expect(200)
  const after = (await c.http.get('/metrics').set('authorization', auth).expect(200)).text
  t.is(metric(after, 'meshdeploy_devices', '{status="active",online="true"}'), 2)
  t.is(metric(after, 'meshdeploy_devices', '{status="blocked",online="false"}'), 1)
  t.is(metric(after, 'meshdeploy_devices', '{status="blocked",online="true"}'), undefined)
  await c.close()
})
