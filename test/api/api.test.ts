import test from 'ava'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes, createHash } from 'node:crypto'
import { openManifest, signStatusRecord, trustKeys, fromHex, type StatusRecord } from '../../protocol/index.js'
import { enrollDevice, openTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n: ' + randomBytes(100_000).toString('hex') + '\n')

function upload (c: TestCoordinator, file: Buffer = SCRIPT, metadata: object = { name: 'tool', version: '1.0' }, name = 'tool.sh') {
  return c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`)
    .field('metadata', JSON.stringify(metadata)).attach('file', file, name)
}

async function contentFiles (c: TestCoordinator): Promise<string[]> {
  const root = join(c.dataDir, 'content')
  const out: string[] = []
  for (const prefix of await readdir(root)) if (prefix !== 'tmp') out.push(...await readdir(join(root, prefix)))
  return out
}

test('health answers without credentials', async t => {
  const c = await openTestCoordinator()
  const { body } = await c.http.get('/v1/health').expect(200)
  t.is(body.status, 'ok')
  await c.close()
})

test('every other route refuses a request without a valid token, as problem+json', async t => {
  const c = await openTestCoordinator()
  const routes: Array<[string, string]> = [
    ['get', '/v1/packages'], ['post', '/v1/packages'], ['get', '/v1/packages/abc'], ['delete', '/v1/packages/abc'],
    ['post', '/v1/tasks'], ['get', '/v1/tasks'], ['get', '/v1/tasks/x'], ['get', '/v1/tasks/x/devices'], ['post', '/v1/tasks/x/cancel'],
    ['get', '/v1/devices'], ['get', '/v1/devices/x'], ['post', '/v1/enrollment-tokens'], ['get', '/v1/enrollment-tokens'],
    ['get', '/v1/agents/assignments'], ['post', '/v1/agents/status'], ['get', `/v1/content/${'a'.repeat(64)}`], ['get', '/v1/stats']
  ]
  for (const [method, path] of routes) {
    const anonymous = await (c.http as any)[method](path)
    t.is(anonymous.status, 401, `${method} ${path}`)
    t.is(anonymous.type, 'application/problem+json')
    t.is(anonymous.body.reason, 'unauthorized')
    const wrong = await (c.http as any)[method](path).set('authorization', 'Bearer mdo_not-a-real-token')
    t.is(wrong.status, 401, `${method} ${path} with a wrong token`)
  }
  await c.close()
})

test('operators and devices are kept to their own routes', async t => {
  const c = await openTestCoordinator()
  const device = await enrollDevice(c)
  const deviceAsOperator = await c.http.get('/v1/packages').set('authorization', `Bearer ${device.credential}`)
  t.is(deviceAsOperator.status, 403)
  t.is(deviceAsOperator.body.reason, 'forbidden')
  const operatorAsDevice = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${c.adminToken}`)
  t.is(operatorAsDevice.status, 403)
  await c.close()
})

test('an upload is chunked, hashed and listed; the same content again is a conflict', async t => {
  const c = await openTestCoordinator()
  const created = await upload(c).expect(201)
  t.is(created.body.sizeBytes, SCRIPT.byteLength)
  t.is(created.body.sha256, createHash('sha256').update(SCRIPT).digest('hex'))
  t.is(created.body.kind, 'shell')
  t.is(created.body.platform, 'linux')
  t.is(created.body.chunkSizeBytes, 64 * 1024)
  t.is(created.body.chunkCount, Math.ceil(SCRIPT.byteLength / 65536))
  t.is(created.headers.location, `/v1/packages/${created.body.id}`)
  t.is((await contentFiles(c)).length, created.body.chunkCount)
  const { body: list } = await c.http.get('/v1/packages').set('authorization', `Bearer ${c.adminToken}`).expect(200)
  t.deepEqual(list.packages.map((p: any) => p.id), [created.body.id])
  const { body: shown } = await c.http.get(`/v1/packages/${created.body.id}?chunks=true`).set('authorization', `Bearer ${c.adminToken}`).expect(200)
  t.is(shown.chunks.length, created.body.chunkCount)
  const again = await upload(c).expect(409)
  t.is(again.body.reason, 'package-exists')
  t.is((await contentFiles(c)).length, created.body.chunkCount)
  await c.close()
})

test('an upload over the size limit is refused with 413 and stores nothing', async t => {
  const c = await openTestCoordinator({ maxPackageBytes: 100_000 })
  const response = await upload(c, randomBytes(300_000))
  t.is(response.status, 413)
  t.is(response.body.reason, 'payload-too-large')
  t.deepEqual(await contentFiles(c), [])
  const { body } = await c.http.get('/v1/packages').set('authorization', `Bearer ${c.adminToken}`)
  t.deepEqual(body.packages, [])
  await c.close()
})

test('uploads with bad metadata or parts are refused and store nothing', async t => {
  const c = await openTestCoordinator()
  const bad = await upload(c, SCRIPT, { name: 'tool' })
  t.is(bad.status, 400)
  t.truthy(bad.body.errors.find((error: any) => error.path === 'version'))
  const unknown = await upload(c, SCRIPT, { name: 'tool', version: '1', color: 'red' })
  t.is(unknown.status, 400)
  const noFile = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`).field('metadata', JSON.stringify({ name: 'a', version: '1' }))
  t.is(noFile.status, 400)
  const noMetadata = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`).attach('file', SCRIPT, 'a.sh')
  t.is(noMetadata.status, 400)
  const twoFiles = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`).field('metadata', JSON.stringify({ name: 'a', version: '1' })).attach('file', SCRIPT, 'a.sh').attach('file', SCRIPT, 'b.sh')
  t.is(twoFiles.status, 400)
  const notMultipart = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`).send({ name: 'a' })
  t.is(notMultipart.status, 415)
  t.deepEqual(await contentFiles(c), [])
  await c.close()
})

test('the uploaded file name is only a label', async t => {
  const c = await openTestCoordinator()
  const { body } = await upload(c, SCRIPT, { name: 'tool', version: '1' }, '../../etc/cron.d/evil').expect(201)
  t.is(body.fileName, 'evil')
  await c.close()
})

test('malformed, nested, mistyped and unknown JSON is refused with a reason', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  const malformed = await c.http.post('/v1/tasks').set('authorization', auth).set('content-type', 'application/json').send('{"packageId": ')
  t.is(malformed.status, 400)
  t.is(malformed.type, 'application/problem+json')
  t.regex(malformed.body.detail, /not valid JSON/)
  const nested = await c.http.post('/v1/tasks').set('authorization', auth).set('content-type', 'application/json').send('['.repeat(100) + ']'.repeat(100))
  t.is(nested.status, 400)
  t.regex(nested.body.detail, /nested deeper/)
  const mistyped = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: 5, action: 'install', targets: { all: true } })
  t.is(mistyped.status, 400)
  t.truthy(mistyped.body.errors.find((error: any) => error.path === 'packageId'))
  const unknown = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: 'a'.repeat(64), action: 'install', targets: { all: true }, priority: 9 })
  t.is(unknown.status, 400)
  const big = await c.http.post('/v1/tasks').set('authorization', auth).set('content-type', 'application/json').send(JSON.stringify({ name: 'x'.repeat(2 * 1024 * 1024) }))
  t.is(big.status, 413)
  const text = await c.http.post('/v1/tasks').set('authorization', auth).set('content-type', 'text/plain').send('hello')
  t.is(text.status, 415)
  const noTargets = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: 'a'.repeat(64), action: 'install', targets: {} })
  t.is(noTargets.status, 400)
  const missingPackage = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: 'a'.repeat(64), action: 'install', targets: { all: true } })
  t.is(missingPackage.status, 400)
  t.deepEqual((await c.http.get('/v1/tasks').set('authorization', auth)).body.tasks, [])
  await c.close()
})

test('unknown routes and ids are 404 problems', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  t.is((await c.http.get('/v1/nothing').set('authorization', auth)).status, 404)
  const missing = await c.http.get('/v1/tasks/task-0').set('authorization', auth)
  t.is(missing.status, 404)
  t.is(missing.body.reason, 'not-found')
  t.is((await c.http.get(`/v1/packages/${'0'.repeat(64)}`).set('authorization', auth)).status, 404)
  t.is((await c.http.get('/v1/devices/dev-0').set('authorization', auth)).status, 404)
  await c.close()
})

test('a task resolves its targets, signs a manifest and lists device rows', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  const a = await enrollDevice(c, { hostname: 'pc-a', groups: ['finance'], site: 'berlin' })
  await enrollDevice(c, { hostname: 'pc-b', groups: ['hr'], site: 'berlin' })
  const { body: pkg } = await upload(c).expect(201)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { groups: ['finance'] }, runArgs: '--quiet --dir "/opt/my tool"', bandwidthKBps: 500 }).expect(201)
  t.is(task.resolvedDevices, 1)
  t.is(task.revision, 1)
  t.deepEqual(task.runArgs, ['--quiet', '--dir', '/opt/my tool'])
  t.is(task.progress.total, 1)
  t.deepEqual(task.progress.counts, { pending: 1 })
  const { body: rows } = await c.http.get(`/v1/tasks/${task.id}/devices`).set('authorization', auth).expect(200)
  t.deepEqual(rows.devices.map((row: any) => [row.hostname, row.state]), [['pc-a', 'pending']])
  const { body: answer } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${a.credential}`).expect(200)
  t.is(answer.assignments.length, 1)
  const { manifest } = openManifest(answer.assignments[0].manifest, { keys: trustKeys(c.services.key.publicKey) })
  t.is(manifest.taskId, task.id)
  t.is(manifest.package.id, pkg.id)
  t.is(manifest.limits.bandwidthKBps, 500)
  t.deepEqual(manifest.install.runArgs, ['--quiet', '--dir', '/opt/my tool'])
  const { body: cancelled } = await c.http.post(`/v1/tasks/${task.id}/cancel`).set('authorization', auth).expect(200)
  t.is(cancelled.status, 'cancelled')
  const { body: after } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${a.credential}`).expect(200)
  t.deepEqual(after.assignments, [])
  await c.close()
})

test('a held assignments request answers as soon as a task for the device appears', async t => {
  const c = await openTestCoordinator()
  const device = await enrollDevice(c, { hostname: 'pc-a' })
  const { body: pkg } = await upload(c).expect(201)
  const { body: first } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${device.credential}`).expect(200)
  t.deepEqual(first.assignments, [])
  const held = c.http.get(`/v1/agents/assignments?waitSeconds=30&etag=${first.etag}`).set('authorization', `Bearer ${device.credential}`).then(response => response)
  await new Promise(resolve => setTimeout(resolve, 100))
  await c.http.post('/v1/tasks').set('authorization', `Bearer ${c.adminToken}`).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const response = await held
  t.is(response.body.assignments.length, 1)
  t.not(response.body.etag, first.etag)
  await c.close()
})

test('status records are verified, stored once and fold into progress', async t => {
  const c = await openTestCoordinator()
  const device = await enrollDevice(c, { hostname: 'pc-a' })
  const other = await enrollDevice(c, { hostname: 'pc-b' })
  const { body: pkg } = await upload(c).expect(201)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', `Bearer ${c.adminToken}`).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const record = (seq: number, state: StatusRecord['state'], extra: Partial<StatusRecord> = {}): StatusRecord => ({
    type: 'meshdeploy.status', deviceId: device.deviceId, taskId: task.id, revision: 1, attempt: 1, seq, state, at: Date.now(), bytesTotal: pkg.sizeBytes, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0, ...extra
  })
  const done = signStatusRecord(record(2, 'succeeded', { bytesDone: pkg.sizeBytes, bytesFromOrigin: pkg.sizeBytes, exitCode: 0 }), device.key)
  const early = signStatusRecord(record(1, 'downloading'), device.key)
  const forged = signStatusRecord(record(3, 'failed'), other.key)
  const auth = `Bearer ${device.credential}`
  const { body: first } = await c.http.post('/v1/agents/status').set('authorization', auth).send({ records: [done, early, forged] }).expect(200)
  t.is(first.acknowledged.length, 2)
  t.is(first.rejected.length, 1)
  t.is(first.rejected[0].index, 2)
  t.is(first.rejected[0].reason, 'unknown-key')
  const { body: again } = await c.http.post('/v1/agents/status').set('authorization', auth).send({ records: [done, early] }).expect(200)
  t.is(again.duplicates, 2)
  const { body: view } = await c.http.get(`/v1/tasks/${task.id}`).set('authorization', `Bearer ${c.adminToken}`)
  t.is(view.progress.counts.succeeded, 1, 'the later record wins although it arrived first')
  t.is(view.progress.bytesFromOrigin, pkg.sizeBytes)
  const { body: history } = await c.http.get(`/v1/tasks/${task.id}/devices/${device.deviceId}/history`).set('authorization', `Bearer ${c.adminToken}`)
  t.deepEqual(history.records.map((r: StatusRecord) => r.seq), [1, 2])
  await c.close()
})

test('the origin serves chunks whole or by range to authenticated callers', async t => {
  const c = await openTestCoordinator()
  const device = await enrollDevice(c)
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`).field('metadata', JSON.stringify({ name: 'a', version: '1' })).attach('file', SCRIPT, 'a.sh').expect(201)
  const { body: shown } = await c.http.get(`/v1/packages/${pkg.id}?chunks=true`).set('authorization', `Bearer ${c.adminToken}`)
  const sha = shown.chunks[0]
  const auth = `Bearer ${device.credential}`
  // A device is served only the chunks of packages it is assigned.
  const bystander = await enrollDevice(c)
  await c.http.post('/v1/tasks').set('authorization', `Bearer ${c.adminToken}`).send({ packageId: pkg.id, action: 'install', targets: { deviceIds: [device.deviceId] } }).expect(201)
  t.is((await c.http.get(`/v1/content/${sha}`).set('authorization', `Bearer ${bystander.credential}`).expect(403)).body.reason, 'content-not-assigned')
  const whole = await c.http.get(`/v1/content/${sha}`).set('authorization', auth).buffer(true).parse((res, cb) => { const parts: Buffer[] = []; res.on('data', (d: Buffer) => parts.push(d)); res.on('end', () => cb(null, Buffer.concat(parts))) }).expect(200)
  t.is(createHash('sha256').update(whole.body).digest('hex'), sha)
  const part = await c.http.get(`/v1/content/${sha}`).set('authorization', auth).set('range', 'bytes=10-19').buffer(true).parse((res, cb) => { const parts: Buffer[] = []; res.on('data', (d: Buffer) => parts.push(d)); res.on('end', () => cb(null, Buffer.concat(parts))) }).expect(206)
  t.deepEqual(part.body, whole.body.subarray(10, 20))
  t.is(part.headers['content-range'], `bytes 10-19/${whole.body.byteLength}`)
  await c.http.get(`/v1/content/${'0'.repeat(64)}`).set('authorization', `Bearer ${c.adminToken}`).expect(404)
  await c.http.get(`/v1/content/${'0'.repeat(64)}`).set('authorization', auth).expect(403)
  await c.http.get('/v1/content/not-a-hash').set('authorization', auth).expect(400)
  t.deepEqual(fromHex(sha).byteLength, 32)
  await c.close()
})

test('deleting a package cancels its unfinished tasks and removes its chunks', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  await enrollDevice(c)
  const { body: pkg } = await upload(c).expect(201)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const { body: answer } = await c.http.delete(`/v1/packages/${pkg.id}`).set('authorization', auth).expect(200)
  t.deepEqual(answer.cancelledTasks, [task.id])
  t.regex(answer.message, /1 unfinished task/)
  t.deepEqual(await contentFiles(c), [])
  t.is((await c.http.get(`/v1/tasks/${task.id}`).set('authorization', auth)).body.status, 'cancelled')
  await c.close()
})

test('enrollment needs a valid token and a fresh device key', async t => {
  const c = await openTestCoordinator()
  const bad = await c.http.post('/v1/agents/enroll').send({ token: 'mde_nope', publicKey: 'a'.repeat(64), hostname: 'x', platform: 'linux', arch: 'x64' })
  t.is(bad.status, 401)
  const { body: { token } } = await c.http.post('/v1/enrollment-tokens').set('authorization', `Bearer ${c.adminToken}`).send({ maxUses: 1, site: 'paris', groups: ['lab'] }).expect(201)
  const { body: enrolled } = await c.http.post('/v1/agents/enroll').send({ token, publicKey: 'b'.repeat(64), hostname: 'x', platform: 'linux', arch: 'x64' }).expect(201)
  t.is(enrolled.site, 'paris')
  t.deepEqual(enrolled.groups, ['lab'])
  t.is(enrolled.coordinatorPublicKey.length, 64)
  const usedUp = await c.http.post('/v1/agents/enroll').send({ token, publicKey: 'c'.repeat(64), hostname: 'y', platform: 'linux', arch: 'x64' })
  t.is(usedUp.status, 401)
  t.is(usedUp.body.reason, 'enrollment-token-used-up')
  await c.close()
})
