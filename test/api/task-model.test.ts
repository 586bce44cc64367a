import test from 'ava'
import { randomBytes } from 'node:crypto'
import { openManifest, signStatusRecord, trustKeys, type DeviceTaskState, type StatusRecord } from '../../protocol/index.js'
import { enrollDevice, FakeClock, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n: ' + randomBytes(2000).toString('hex') + '\n')

async function setup (clock = new FakeClock()): Promise<{ c: TestCoordinator, clock: FakeClock, auth: string, pkg: any }> {
  const c = await openTestCoordinator({ now: clock.now })
  const auth = `Bearer ${c.adminToken}`
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', auth)
    .field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  return { c, clock, auth, pkg }
}

async function assignments (c: TestCoordinator, device: EnrolledDevice): Promise<any[]> {
  return (await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${device.credential}`).expect(200)).body.assignments
}

async function rows (c: TestCoordinator, taskId: string): Promise<Record<string, any>> {
  const { body } = await c.http.get(`/v1/tasks/${taskId}/devices`).set('authorization', `Bearer ${c.adminToken}`).expect(200)
  return Object.fromEntries(body.devices.map((row: any) => [row.hostname, row]))
}

async function report (c: TestCoordinator, device: EnrolledDevice, taskId: string, fields: Partial<StatusRecord> & { state: DeviceTaskState }, clock: FakeClock): Promise<void> {
  const record: StatusRecord = {
    type: 'meshdeploy.status', deviceId: device.deviceId, taskId, revision: 1, attempt: 1, seq: 1, at: clock.now(),
    bytesTotal: 100, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0, ...fields
  }
  const { body } = await c.http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential}`).send({ records: [signStatusRecord(record, device.key)] }).expect(200)
  if (body.rejected.length > 0) throw new Error(JSON.stringify(body.rejected))
}

test('rate control: at most N devices per minute are released; the others show queued with the reason (fake clock)', async t => {
  const { c, clock, auth, pkg } = await setup()
  const devices: EnrolledDevice[] = []
  for (const name of ['pc-1', 'pc-2', 'pc-3', 'pc-4', 'pc-5']) devices.push(await enrollDevice(c, { hostname: name }))
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true }, devicesPerMinute: 2 }).expect(201)
  t.is(task.resolvedDevices, 5)
  t.is(task.releasedDevices, 2)
  const states = async (): Promise<string[]> => Object.values(await rows(c, task.id)).map(row => row.state)
  t.deepEqual((await states()).sort(), ['pending', 'pending', 'queued', 'queued', 'queued'])
  const queued = Object.values(await rows(c, task.id)).find(row => row.state === 'queued')
  t.regex(queued.message, /waiting for its turn: 2 device\(s\) per minute; next release at 2026-03-02T09:01:00\.000Z/)
  const holding = (await Promise.all(devices.map(async device => (await assignments(c, device)).length))).reduce((a, b) => a + b, 0)
  t.is(holding, 2, 'only released devices get the manifest')
  clock.advance(30_000)
  t.deepEqual((await c.services.scheduler.tick()).released, {})
  clock.advance(30_000)
  const { released, nextDueMs } = await c.services.scheduler.tick()
  t.is(released[task.id].length, 2)
  t.is(nextDueMs, clock.now() + 60_000)
  clock.advance(60_000)
  t.is((await c.services.scheduler.tick()).released[task.id].length, 1)
  t.deepEqual((await states()).sort(), ['pending', 'pending', 'pending', 'pending', 'pending'])
  await c.close()
})

test('a task scheduled for later releases nobody before its start', async t => {
  const { c, clock, auth, pkg } = await setup()
  const device = await enrollDevice(c, { hostname: 'pc-1' })
  const startAt = new Date(clock.now() + 3600_000).toISOString()
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true }, startAt }).expect(201)
  t.is(task.phase, 'scheduled')
  t.is(task.validUntil, new Date(Date.parse(startAt) + 7 * 24 * 3600_000).toISOString(), 'one week of validity from the start')
  t.like((await rows(c, task.id))['pc-1'], { state: 'queued', message: `scheduled for ${startAt}` })
  t.deepEqual(await assignments(c, device), [])
  clock.advance(3599_000)
  t.deepEqual((await c.services.scheduler.tick()).released, {})
  clock.advance(1000)
  t.deepEqual((await c.services.scheduler.tick()).released, { [task.id]: [device.deviceId] })
  t.is((await assignments(c, device)).length, 1)
  await c.close()
})

test('past its validity a task stops dispatching and unfinished devices show expired', async t => {
  const { c, clock, auth, pkg } = await setup()
  const a = await enrollDevice(c, { hostname: 'pc-a' })
  const b = await enrollDevice(c, { hostname: 'pc-b' })
  const done = await enrollDevice(c, { hostname: 'pc-done' })
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true }, validForSeconds: 3600 }).expect(201)
  await report(c, a, task.id, { state: 'downloading', bytesDone: 40 }, clock)
  await report(c, done, task.id, { state: 'succeeded', exitCode: 0 }, clock)
  t.is((await assignments(c, a)).length, 1)
  clock.advance(3600_000)
  await c.services.scheduler.tick()
  const after = await rows(c, task.id)
  t.is(after['pc-a'].state, 'expired')
  t.regex(after['pc-a'].message, /validity ended at .*; last state downloading/)
  t.is(after['pc-b'].state, 'expired')
  t.is(after['pc-done'].state, 'succeeded')
  t.deepEqual(await assignments(c, a), [])
  t.deepEqual(await assignments(c, b), [])
  const { body: view } = await c.http.get(`/v1/tasks/${task.id}`).set('authorization', auth).expect(200)
  t.is(view.phase, 'expired')
  t.is(view.progress.percent, 100)
  t.deepEqual(view.progress.counts, { expired: 2, succeeded: 1 })
  await c.close()
})

test('targets resolve dynamically: departments and roles of the people using devices, groups joined later', async t => {
  const { c, auth, pkg } = await setup()
  const a = await enrollDevice(c, { hostname: 'pc-a' })
  const b = await enrollDevice(c, { hostname: 'pc-b' })
  const { body: imported } = await c.http.post('/v1/users/import').set('authorization', auth).send({ users: [
    { id: 'alice', department: 'Sales/EMEA', role: 'manager', devices: ['PC-A'] },
    { id: 'bob', department: 'Engineering', role: 'developer', devices: [b.deviceId] }
  ] }).expect(200)
  t.like(imported, { created: 2, total: 2 })
  const { body: bySales } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { departments: ['Sales'] } }).expect(201)
  t.is(bySales.resolvedDevices, 1)
  const { body: byRole } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { roles: ['developer'], groups: ['kiosk'] } }).expect(201)
  t.is(byRole.resolvedDevices, 1)
  t.deepEqual((await assignments(c, a)).map(x => x.taskId), [bySales.id])
  t.deepEqual((await assignments(c, b)).map(x => x.taskId), [byRole.id])
  // A device enrolled later, used by someone who then joins Sales, gets the task; so does one that joins a group.
  const later = await enrollDevice(c, { hostname: 'pc-later' })
  const kiosk = await enrollDevice(c, { hostname: 'pc-kiosk' })
  t.deepEqual(await assignments(c, later), [])
  await c.http.post('/v1/users/import').set('authorization', auth).send({ users: [{ id: 'carol', department: 'sales', devices: ['pc-later'] }] }).expect(200)
  await c.http.patch(`/v1/devices/${kiosk.deviceId}`).set('authorization', auth).send({ addGroups: ['kiosk'] }).expect(200)
  await c.services.scheduler.tick()
  t.deepEqual((await assignments(c, later)).map(x => x.taskId), [bySales.id])
  t.deepEqual((await assignments(c, kiosk)).map(x => x.taskId), [byRole.id])
  const { body: shown } = await c.http.get(`/v1/devices/${a.deviceId}`).set('authorization', auth).expect(200)
  t.deepEqual(shown.users, [{ id: 'alice', department: 'Sales/EMEA', role: 'manager' }])
  // A full import without carol takes her device out of the targets; it had not started, so it loses the task.
  await c.http.post('/v1/users/import').set('authorization', auth).send({ replace: true, users: [{ id: 'alice', department: 'Sales/EMEA', role: 'manager', devices: ['PC-A'] }] }).expect(200)
  t.deepEqual(await assignments(c, later), [])
  await c.close()
})

test('pause, edit and resume: paused tasks release nobody, running devices finish, edits raise the revision', async t => {
  const { c, clock, auth, pkg } = await setup()
  const busy = await enrollDevice(c, { hostname: 'pc-busy' })
  const idle = await enrollDevice(c, { hostname: 'pc-idle' })
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true }, maxAttempts: 2 }).expect(201)
  await report(c, busy, task.id, { state: 'downloading', bytesDone: 10 }, clock)
  const refused = await c.http.patch(`/v1/tasks/${task.id}`).set('authorization', auth).send({ maxAttempts: 5 }).expect(409)
  t.is(refused.body.reason, 'task-running')
  const { body: paused } = await c.http.post(`/v1/tasks/${task.id}/pause`).set('authorization', auth).expect(200)
  t.is(paused.phase, 'paused')
  t.deepEqual((await assignments(c, busy)).map(x => x.mode), ['finish'], 'the busy device finishes what it started')
  t.deepEqual((await assignments(c, idle)).map(x => x.mode), ['finish'], 'an idle device starts nothing')
  const shown = await rows(c, task.id)
  t.is(shown['pc-busy'].state, 'downloading')
  t.like(shown['pc-idle'], { state: 'queued', message: 'the task is paused' })
  const newcomer = await enrollDevice(c, { hostname: 'pc-new' })
  await c.services.scheduler.tick()
  t.deepEqual(await assignments(c, newcomer), [], 'no release while paused')
  const { body: edited } = await c.http.patch(`/v1/tasks/${task.id}`).set('authorization', auth).send({ maxAttempts: 5, runArgs: '--force', deferWhileVpn: true, reboot: { policy: 'prompt', deadlineSeconds: 600 } }).expect(200)
  t.is(edited.revision, 2)
  const { body: renamed } = await c.http.patch(`/v1/tasks/${task.id}`).set('authorization', auth).send({ name: 'renamed' }).expect(200)
  t.is(renamed.revision, 2, 'a change devices do not see keeps the revision')
  await c.http.post(`/v1/tasks/${task.id}/resume`).set('authorization', auth).expect(200)
  const [current] = await assignments(c, newcomer)
  t.is(current.revision, 2)
  t.is(current.mode, undefined)
  const { manifest } = openManifest(current.manifest, { keys: trustKeys(c.services.key.publicKey), now: clock.now() })
  t.like(manifest, { revision: 2, limits: { maxAttempts: 5 }, install: { runArgs: ['--force'] }, conditions: { deferWhileVpn: true }, reboot: { policy: 'prompt', deadlineSeconds: 600 } })
  await c.close()
})

test('delete (Feilian): the task leaves the lists and releases nobody; devices already running finish and may still report', async t => {
  const { c, clock, auth, pkg } = await setup()
  const busy = await enrollDevice(c, { hostname: 'pc-busy' })
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  await report(c, busy, task.id, { state: 'installing', bytesDone: 100 }, clock)
  const { body: deleted } = await c.http.delete(`/v1/tasks/${task.id}`).set('authorization', auth).expect(200)
  t.is(deleted.finishingDevices, 1)
  t.regex(deleted.message, /1 device\(s\) already downloading or installing will finish/)
  await c.http.get(`/v1/tasks/${task.id}`).set('authorization', auth).expect(404)
  t.deepEqual((await c.http.get('/v1/tasks').set('authorization', auth)).body.tasks, [])
  t.is((await c.http.get('/v1/tasks?deleted=true').set('authorization', auth)).body.tasks[0].status, 'deleted')
  t.deepEqual((await assignments(c, busy)).map(x => x.mode), ['finish'])
  const late = await enrollDevice(c, { hostname: 'pc-late' })
  await c.services.scheduler.tick()
  t.deepEqual(await assignments(c, late), [])
  await report(c, busy, task.id, { state: 'succeeded', seq: 2, exitCode: 0 }, clock)
  t.deepEqual(await assignments(c, busy), [])
  await c.close()
})

test('cancel stops the task for everyone; unstarted devices show cancelled', async t => {
  const { c, auth, pkg } = await setup()
  const device = await enrollDevice(c, { hostname: 'pc-1' })
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  await c.http.post(`/v1/tasks/${task.id}/cancel`).set('authorization', auth).expect(200)
  t.deepEqual(await assignments(c, device), [])
  t.like((await rows(c, task.id))['pc-1'], { state: 'cancelled' })
  t.is((await c.http.patch(`/v1/tasks/${task.id}`).set('authorization', auth).send({ name: 'x' })).body.reason, 'task-cancelled')
  t.is((await c.http.post(`/v1/tasks/${task.id}/resume`).set('authorization', auth)).status, 409)
  await c.close()
})

test('re-run for failed devices: a new revision with a fresh attempt counter goes to failed devices only', async t => {
  const { c, clock, auth, pkg } = await setup()
  const failed = await enrollDevice(c, { hostname: 'pc-failed' })
  const fine = await enrollDevice(c, { hostname: 'pc-fine' })
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true }, maxAttempts: 1 }).expect(201)
  t.is((await c.http.post(`/v1/tasks/${task.id}/rerun`).set('authorization', auth)).body.reason, 'no-failed-devices')
  await report(c, failed, task.id, { state: 'failed', final: true, exitCode: 1, message: 'exit 1; attempt 1 of 1' }, clock)
  await report(c, fine, task.id, { state: 'succeeded', exitCode: 0 }, clock)
  t.deepEqual(await assignments(c, failed), [])
  const { body: rerun } = await c.http.post(`/v1/tasks/${task.id}/rerun`).set('authorization', auth).expect(200)
  t.is(rerun.rerunDevices, 1)
  t.is(rerun.revision, 2)
  const [again] = await assignments(c, failed)
  t.like(openManifest(again.manifest, { keys: trustKeys(c.services.key.publicKey), now: clock.now() }).manifest, { revision: 2, rerun: 1 })
  t.deepEqual(await assignments(c, fine), [], 'a device that succeeded is not asked again')
  await c.close()
})

test('uninstall tasks need the package\'s uninstall spec, which the manifest then carries', async t => {
  const { c, clock, auth, pkg } = await setup()
  const device = await enrollDevice(c, { hostname: 'pc-1' })
  const missing = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'uninstall', targets: { all: true } }).expect(400)
  t.regex(missing.body.detail, /has no uninstall spec/)
  await c.http.patch(`/v1/packages/${pkg.id}`).set('authorization', auth).send({ uninstall: { type: 'command', command: ['/bin/sh', '-c', 'rm -f "$MESHDEPLOY_INSTALL_ROOT/tool"'] } }).expect(200)
  await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'uninstall', targets: { all: true } }).expect(201)
  const [assignment] = await assignments(c, device)
  const { manifest } = openManifest(assignment.manifest, { keys: trustKeys(c.services.key.publicKey), now: clock.now() })
  t.is(manifest.action, 'uninstall')
  t.deepEqual(manifest.install.uninstall, { type: 'command', command: ['/bin/sh', '-c', 'rm -f "$MESHDEPLOY_INSTALL_ROOT/tool"'] })
  await c.close()
})
