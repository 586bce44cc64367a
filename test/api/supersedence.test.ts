import test from 'ava'
import { openManifest, signStatusRecord, trustKeys, type StatusRecord } from '../../protocol/index.js'
import { enrollDevice, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

async function upload (c: TestCoordinator, name: string, version: string, metadata: Record<string, unknown> = {}): Promise<any> {
  const { body } = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`)
    .field('metadata', JSON.stringify({ name, version, detection: { type: 'file', path: `/opt/${name}/${version}` }, ...metadata })).attach('file', Buffer.from(`#!/bin/sh\necho ${name} ${version}\n`), `${name}.sh`).expect(201)
  return body
}

async function manifestsOf (c: TestCoordinator, device: EnrolledDevice): Promise<Array<{ taskId: string, packageId: string, revision: number }>> {
  const { body } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${device.credential}`).expect(200)
  return body.assignments.map((assignment: any) => {
    const { manifest } = openManifest(assignment.manifest, { keys: trustKeys(c.services.keyring.current.publicKey) })
    return { taskId: manifest.taskId, packageId: manifest.package.id, revision: manifest.revision }
  })
}

test('supersedence: a new package\'s task also targets devices that hold the old one; unfinished tasks of the old one switch to it in one call', async t => {
  const c = await openTestCoordinator()
  t.teardown(async () => { await c.close() })
  const auth = `Bearer ${c.adminToken}`
  const [holder, pending, other] = [await enrollDevice(c, { hostname: 'holder' }), await enrollDevice(c, { hostname: 'pending' }), await enrollDevice(c, { hostname: 'other' })]
  const old = await upload(c, 'tool', '1.0')
  const { body: first } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: old.id, action: 'install', targets: { deviceIds: ['holder', 'pending'] } }).expect(201)
  await c.services.scheduler.tick()
  const record: StatusRecord = { type: 'meshdeploy.status', deviceId: holder.deviceId, taskId: first.id, revision: 1, attempt: 1, seq: 1, at: Date.now(), state: 'succeeded', bytesTotal: old.sizeBytes, bytesDone: old.sizeBytes, bytesFromPeers: 0, bytesFromOrigin: old.sizeBytes }
  await c.http.post('/v1/agents/status').set('authorization', `Bearer ${holder.credential}`).send({ records: [signStatusRecord(record, holder.key)] }).expect(200)
  await new Promise(resolve => setTimeout(resolve, 100))

  const next = await upload(c, 'tool', '2.0', { supersedes: [{ packageId: old.id, mode: 'upgrade' }] })
  const { body: second } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: next.id, action: 'install', targets: { groups: ['nobody'] } }).expect(201)
  t.deepEqual(second.targets.installedPackages, [old.id])
  t.is(second.resolvedDevices, 1, 'the device that holds the old package')
  await c.services.scheduler.tick()
  t.true((await manifestsOf(c, holder)).some(entry => entry.taskId === second.id && entry.packageId === next.id))
  t.false((await manifestsOf(c, other)).some(entry => entry.taskId === second.id))
  t.false((await manifestsOf(c, pending)).some(entry => entry.taskId === second.id), 'a device that does not hold the old package is not targeted')

  const { body: switched } = await c.http.post(`/v1/packages/${next.id}/switch-tasks`).set('authorization', auth).expect(200)
  t.deepEqual(switched.switchedTasks, [first.id])
  const { body: view } = await c.http.get(`/v1/tasks/${first.id}`).set('authorization', auth).expect(200)
  t.like(view, { packageId: next.id, revision: 2, name: 'install tool 2.0' })
  t.like(view.switchedFrom[0], { packageId: old.id, revision: 2 })
  for (const device of [holder, pending]) t.deepEqual((await manifestsOf(c, device)).filter(entry => entry.taskId === first.id), [{ taskId: first.id, packageId: next.id, revision: 2 }], 'the old package\'s devices, done or not, get the new one')
  t.is((await c.http.post(`/v1/packages/${old.id}/switch-tasks`).set('authorization', auth).expect(409)).body.reason, 'supersedes-nothing')
})
