import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, openManifest, signPackageHash, toHex, trustKeys } from '../../protocol/index.js'
import { enrollDevice, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

const script = (): Buffer => Buffer.from('#!/bin/sh\necho ok\n: ' + randomBytes(1000).toString('hex') + '\n')
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

function upload (c: TestCoordinator, file: Buffer, metadata: object, token = c.adminToken) {
  return c.http.post('/v1/packages').set('authorization', `Bearer ${token}`).field('metadata', JSON.stringify(metadata)).attach('file', file, 'tool.sh')
}

async function contentFiles (c: TestCoordinator): Promise<number> {
  let count = 0
  for (const prefix of await readdir(join(c.dataDir, 'content'))) if (prefix !== 'tmp') count += (await readdir(join(c.dataDir, 'content', prefix))).length
  return count
}

async function manifestFor (c: TestCoordinator, device: EnrolledDevice): Promise<any> {
  const { body } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${device.credential}`).expect(200)
  return body.assignments.map((assignment: any) => openManifest(assignment.manifest, { keys: trustKeys(c.services.key.publicKey) }).manifest)
}

test('package metadata is editable; unfinished tasks get a new revision carrying it', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  const device = await enrollDevice(c, { hostname: 'pc-1' })
  const { body: pkg } = await upload(c, script(), { name: 'tool', version: '1.0', exitCodes: { 3010: 'success' } }).expect(201)
  t.deepEqual(pkg.exitCodes, { 3010: 'success' })
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const { body: edited } = await c.http.patch(`/v1/packages/${pkg.id}`).set('authorization', auth).send({
    description: 'the tool, silent', publisher: 'Example Ltd',
    detection: { type: 'linux-package', manager: 'dpkg', name: 'tool', version: '1.0-1' },
    exitCodes: { 5: 'retry', 77: 'success-reboot-required' },
    uninstall: { type: 'linux-package', manager: 'dpkg', name: 'tool', purge: true }
  }).expect(200)
  t.deepEqual(edited.revisedTasks, [task.id])
  t.is(edited.description, 'the tool, silent')
  const [manifest] = await manifestFor(c, device)
  t.is(manifest.revision, 2)
  t.deepEqual(manifest.install.exitCodes, { 5: 'retry', 77: 'success-reboot-required' })
  t.deepEqual(manifest.install.detection, { type: 'linux-package', manager: 'dpkg', name: 'tool', version: '1.0-1' })
  const wrong = await c.http.patch(`/v1/packages/${pkg.id}`).set('authorization', auth).send({ detection: { type: 'windows-registry', displayName: 'Tool' } }).expect(400)
  t.regex(wrong.body.detail, /detection rule is for windows, the package for linux/)
  const msiOnLinux = await c.http.patch(`/v1/packages/${pkg.id}`).set('authorization', auth).send({ kind: 'msi', platform: 'linux' }).expect(400)
  t.regex(msiOnLinux.body.detail, /msi package runs on windows/)
  const { body: cleared } = await c.http.patch(`/v1/packages/${pkg.id}`).set('authorization', auth).send({ exitCodes: null, description: null }).expect(200)
  t.is(cleared.exitCodes, undefined)
  t.is(cleared.description, undefined)
  t.is((await c.http.patch(`/v1/packages/${pkg.id}`).set('authorization', auth).send({ colour: 'red' })).status, 400)
  await c.close()
})

test('security verification: off by default; on, uploads need a publisher signature that verifies against a registered key', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  const device = await enrollDevice(c, { hostname: 'pc-1' })
  t.deepEqual((await c.http.get('/v1/settings').set('authorization', auth).expect(200)).body, { securityVerification: false, autoApproveRequests: false })
  const { body: unsigned } = await upload(c, script(), { name: 'old', version: '1' }).expect(201)
  const viewer = (await c.services.tokens.createOperatorToken({ name: 'watcher', role: 'viewer' }, 'test')).secret
  t.is((await c.http.patch('/v1/settings').set('authorization', `Bearer ${viewer}`).send({ securityVerification: true })).status, 403)
  await c.http.patch('/v1/settings').set('authorization', auth).send({ securityVerification: true }).expect(200)
  const stored = await contentFiles(c)

  const missing = await upload(c, script(), { name: 'tool', version: '1' }).expect(422)
  t.is(missing.body.reason, 'signature-required')
  const publisher = generateKeyPair()
  const file = script()
  const unknown = await upload(c, file, { name: 'tool', version: '1', publisherSignature: signPackageHash(sha256(file), publisher) }).expect(422)
  t.is(unknown.body.reason, 'unknown-publisher-key')
  const { body: registered } = await c.http.post('/v1/publishers').set('authorization', auth).send({ name: 'Example Ltd', publicKey: toHex(publisher.publicKey) }).expect(201)
  const forOther = await upload(c, file, { name: 'tool', version: '1', publisherSignature: signPackageHash(sha256(script()), publisher) }).expect(422)
  t.is(forOther.body.reason, 'bad-publisher-signature')
  t.regex(forOther.body.detail, /does not verify for this file/)
  t.is(await contentFiles(c), stored, 'refused uploads leave nothing behind')

  const { body: signed } = await upload(c, file, { name: 'tool', version: '1', publisherSignature: signPackageHash(sha256(file), publisher) }).expect(201)
  t.like(signed.publisherSignature, { publisher: 'Example Ltd', keyId: registered.keyId, publicKey: toHex(publisher.publicKey) })
  await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: signed.id, action: 'install', targets: { all: true } }).expect(201)
  const [manifest] = await manifestFor(c, device)
  t.is(manifest.package.publisherSignature.signature, signed.publisherSignature.signature, 'the agent gets the signature to check again')
  const old = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: unsigned.id, action: 'install', targets: { all: true } }).expect(422)
  t.is(old.body.reason, 'package-unsigned')
  await c.http.delete(`/v1/publishers/${registered.keyId}`).set('authorization', auth).expect(200)
  const revoked = await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: signed.id, action: 'install', targets: { all: true } }).expect(422)
  t.is(revoked.body.reason, 'unknown-publisher-key')
  await c.http.patch('/v1/settings').set('authorization', auth).send({ securityVerification: false }).expect(200)
  await c.http.post('/v1/tasks').set('authorization', auth).send({ packageId: unsigned.id, action: 'install', targets: { all: true } }).expect(201)
  await c.close()
})

test('self-service: a device requests an approved package; an operator approves (an install task for it) or denies; auto-approve', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  const device = await enrollDevice(c, { hostname: 'pc-1' })
  const other = await enrollDevice(c, { hostname: 'pc-2' })
  const dev = (d: EnrolledDevice): string => `Bearer ${d.credential}`
  const { body: tool } = await upload(c, script(), { name: 'Tool', version: '2.0' }).expect(201)
  const { body: winOnly } = await c.http.post('/v1/packages').set('authorization', auth).field('metadata', JSON.stringify({ name: 'WinTool', version: '1', selfService: true }))
    .attach('file', Buffer.concat([Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]), randomBytes(600)]), 'wintool.msi').expect(201)
  t.is(winOnly.platform, 'windows')
  // A device learns only that its catalog has no such package; an operator learns why.
  const refused = await c.http.post('/v1/agents/requests').set('authorization', dev(device)).send({ package: 'tool' }).expect(404)
  t.is(refused.body.reason, 'not-found')
  t.is((await c.http.post('/v1/requests').set('authorization', auth).send({ package: 'tool', deviceId: device.deviceId }).expect(409)).body.reason, 'not-self-service')
  await c.http.patch(`/v1/packages/${tool.id}`).set('authorization', auth).send({ selfService: true }).expect(200)
  const { body: catalog } = await c.http.get('/v1/agents/catalog').set('authorization', dev(device)).expect(200)
  t.deepEqual(catalog.packages.map((p: any) => p.name), ['Tool'], 'only packages for the device\'s platform')
  t.is((await c.http.post('/v1/agents/requests').set('authorization', dev(device)).send({ package: 'WinTool' })).body.reason, 'not-found')
  t.is((await c.http.post('/v1/requests').set('authorization', auth).send({ package: 'WinTool', deviceId: device.deviceId })).body.reason, 'not-applicable')
  // An operator names the device by host name too (any case); a name no active device has is not found.
  t.is((await c.http.post('/v1/requests').set('authorization', auth).send({ package: 'WinTool', deviceId: 'PC-1' })).body.reason, 'not-applicable')
  t.is((await c.http.post('/v1/requests').set('authorization', auth).send({ package: 'Tool', deviceId: 'pc-nowhere' }).expect(404)).body.reason, 'not-found')

  const { body: request } = await c.http.post('/v1/agents/requests').set('authorization', dev(device)).send({ package: 'tool', user: 'alice', reason: 'need it' }).expect(201)
  t.like(request, { status: 'pending', packageId: tool.id, hostname: 'pc-1', user: 'alice', requestedBy: 'device' })
  const { body: again } = await c.http.post('/v1/agents/requests').set('authorization', dev(device)).send({ package: tool.id.slice(0, 10) }).expect(200)
  t.is(again.id, request.id, 'asking again answers the pending request')
  t.deepEqual((await c.http.get('/v1/requests?status=pending').set('authorization', auth)).body.requests.map((r: any) => r.id), [request.id])
  t.deepEqual(await manifestFor(c, device), [])

  const { body: approved } = await c.http.post(`/v1/requests/${request.id}/approve`).set('authorization', auth).send({ comment: 'ok' }).expect(200)
  t.like(approved, { status: 'approved', decidedBy: 'admin', comment: 'ok' })
  const { body: task } = await c.http.get(`/v1/tasks/${approved.taskId}`).set('authorization', auth).expect(200)
  t.like(task, { action: 'install', packageId: tool.id, requestId: request.id, targets: { deviceIds: [device.deviceId] } })
  t.deepEqual((await manifestFor(c, device)).map((m: any) => m.taskId), [approved.taskId])
  t.deepEqual(await manifestFor(c, other), [], 'only the requesting device')
  t.is((await c.http.post(`/v1/requests/${request.id}/deny`).set('authorization', auth)).body.reason, 'request-decided')

  const { body: second } = await c.http.post('/v1/requests').set('authorization', auth).send({ package: 'Tool', deviceId: 'PC-2', user: 'bob' }).expect(201)
  t.like(second, { status: 'pending', deviceId: other.deviceId, requestedBy: 'admin' })
  const { body: denied } = await c.http.post(`/v1/requests/${second.id}/deny`).set('authorization', auth).send({ comment: 'licence limit' }).expect(200)
  t.like(denied, { status: 'denied', comment: 'licence limit' })
  t.is(denied.taskId, undefined)

  await c.http.patch('/v1/settings').set('authorization', auth).send({ autoApproveRequests: true }).expect(200)
  const { body: auto } = await c.http.post('/v1/agents/requests').set('authorization', dev(other)).send({ package: 'Tool' }).expect(201)
  t.like(auto, { status: 'approved', decidedBy: 'auto-approve' })
  t.deepEqual((await manifestFor(c, other)).map((m: any) => m.taskId), [auto.taskId])
  t.deepEqual((await c.http.get('/v1/agents/requests').set('authorization', dev(other))).body.requests.map((r: any) => r.status), ['approved', 'denied'])
  await c.close()
})

test('every declared route but health and enroll refuses anonymous callers; device routes refuse operators', async t => {
  // One refused anonymous call per route: more than the default burst for one address allows.
  const c = await openTestCoordinator({ limits: { anonymousRate: { requestsPerSecond: 10, burst: 1000 } } })
  const device = await enrollDevice(c, { hostname: 'pc-1' })
  const specs = (c.app as any).routes.specs as Array<{ method: string, path: string, access: string }>
  t.true(specs.length >= 40)
  for (const spec of specs) {
    const path = spec.path.replace(/:[a-zA-Z]+/g, 'x')
    const anonymous = await (c.http as any)[spec.method](path)
    if (spec.access === 'public') continue
    t.is(anonymous.status, 401, `${spec.method} ${spec.path}`)
    if (spec.access === 'device') t.is((await (c.http as any)[spec.method](path).set('authorization', `Bearer ${c.adminToken}`)).status, 403, `${spec.method} ${spec.path} as an operator`)
    if (spec.access === 'admin' || spec.access === 'operator') t.is((await (c.http as any)[spec.method](path).set('authorization', `Bearer ${device.credential}`)).status, 403, `${spec.method} ${spec.path} as a device`)
  }
  await c.close()
})

test('a whole directory imports in one request; replace removes who is gone; bad rows are refused with their place', async t => {
  const c = await openTestCoordinator()
  const auth = `Bearer ${c.adminToken}`
  const users = Array.from({ length: 20_000 }, (_, index) => ({ id: `user${index}`, displayName: `User ${index}`, department: `Dept${index % 50}/Team${index % 7}`, role: index % 10 === 0 ? 'manager' : 'staff', devices: [`pc-${index}`] }))
  const { body: first } = await c.http.post('/v1/users/import').set('authorization', auth).send({ users }).expect(200)
  t.like(first, { created: 20_000, total: 20_000 })
  const { body: second } = await c.http.post('/v1/users/import').set('authorization', auth).send({ users: users.slice(0, 100), replace: true }).expect(200)
  t.like(second, { unchanged: 100, removed: 19_900, total: 100 })
  const bad = await c.http.post('/v1/users/import').set('authorization', auth).send({ users: [{ id: 'ok' }, { id: 'has space' }] }).expect(400)
  t.is(bad.body.errors[0].path, 'users.1.id')
  t.is((await c.http.get('/v1/users').set('authorization', auth)).body.users.length, 100, 'nothing of a refused import is kept')
  await c.close()
})
