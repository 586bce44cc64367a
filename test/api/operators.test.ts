import test from 'ava'
import { randomBytes } from 'node:crypto'
import {
  followKeyRotations, fromBase64, openKeyRotation, openManifest, publicKeyFromHex, trustKeys
} from '../../protocol/index.js'
import { openServices } from '../../coordinator/services.js'
import { silentLogger } from '../../protocol/logger.js'
import { enrollDevice, openTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n: ' + randomBytes(2000).toString('hex') + '\n')
const bearer = (token: string): string => `Bearer ${token}`

async function uploadAndTask (c: TestCoordinator, targets: object = { all: true }): Promise<{ packageId: string, taskId: string, resolvedDevices: number }> {
  const pkg = await c.http.post('/v1/packages').set('authorization', bearer(c.adminToken)).field('metadata', JSON.stringify({ name: 'tool', version: randomBytes(4).toString('hex') })).attach('file', Buffer.concat([SCRIPT, randomBytes(16)]), 'tool.sh').expect(201)
  const task = await c.http.post('/v1/tasks').set('authorization', bearer(c.adminToken)).send({ packageId: pkg.body.id, action: 'install', targets }).expect(201)
  return { packageId: pkg.body.id, taskId: task.body.id, resolvedDevices: task.body.resolvedDevices }
}

test('operator tokens: created with a role and shown once, listed without secrets, revoked at once', async t => {
  const c = await openTestCoordinator()
  const admin = bearer(c.adminToken)
  const { body: created } = await c.http.post('/v1/tokens').set('authorization', admin).send({ name: 'dashboard', role: 'viewer' }).expect(201)
  t.regex(created.token, /^mdo_/)
  t.is(created.role, 'viewer')
  t.is(created.createdBy, 'admin')
  t.is(created.hash, undefined)
  await c.http.get('/v1/tasks').set('authorization', bearer(created.token)).expect(200)
  const { body: listed } = await c.http.get('/v1/tokens').set('authorization', admin).expect(200)
  t.deepEqual(listed.tokens.map((token: any) => [token.name, token.role, token.active]), [['admin', 'admin', true], ['dashboard', 'viewer', true]])
  t.false(JSON.stringify(listed).includes(created.token), 'no secret in the list')
  t.true(listed.tokens.every((token: any) => token.hash === undefined), 'no hash in the list')
  const duplicate = await c.http.post('/v1/tokens').set('authorization', admin).send({ name: 'dashboard', role: 'operator' })
  t.is(duplicate.body.reason, 'token-name-taken')
  const { body: revoked } = await c.http.post(`/v1/tokens/${created.id}/revoke`).set('authorization', admin).expect(200)
  t.false(revoked.active)
  t.is(revoked.revokedBy, 'admin')
  const after = await c.http.get('/v1/tasks').set('authorization', bearer(created.token))
  t.is(after.status, 401)
  t.is(after.body.reason, 'token-revoked')
  // The name is free again once its token is revoked.
  await c.http.post('/v1/tokens').set('authorization', admin).send({ name: 'dashboard', role: 'viewer' }).expect(201)
  await c.close()
})

test('a token with an expiry stops working then', async t => {
  let now = Date.parse('2026-11-21T12:00:00Z')
  const c = await openTestCoordinator({ now: () => now })
  const { body } = await c.http.post('/v1/tokens').set('authorization', bearer(c.adminToken)).send({ name: 'contractor', role: 'operator', expiresInSeconds: 3600 }).expect(201)
  t.is(body.expiresAt, '2026-11-21T13:00:00.000Z')
  await c.http.get('/v1/tasks').set('authorization', bearer(body.token)).expect(200)
  now += 3600_000
  const expired = await c.http.get('/v1/tasks').set('authorization', bearer(body.token))
  t.is(expired.body.reason, 'token-expired')
  await c.close()
})

test('the audit log records every operator change: who, what, when, from where, never a secret', async t => {
  const c = await openTestCoordinator()
  const admin = bearer(c.adminToken)
  const { body: ops } = await c.http.post('/v1/tokens').set('authorization', admin).set('user-agent', 'audit-test').send({ name: 'ops', role: 'operator' }).expect(201)
  const device = await enrollDevice(c, { hostname: 'pc-audit' })
  await c.http.post(`/v1/devices/${device.deviceId}/block`).set('authorization', bearer(ops.token)).send({ reason: 'stolen' }).expect(200)
  await c.http.get('/v1/devices').set('authorization', bearer(ops.token)).expect(200)
  await c.http.post('/v1/tasks').set('authorization', bearer(ops.token)).send({ packageId: 'a'.repeat(64), action: 'install', targets: { all: true } }).expect(400)

  const { body: log } = await c.http.get('/v1/audit').set('authorization', admin).expect(200)
  // Newest first; reads and refused requests are not changes.
  t.deepEqual(log.entries.map((entry: any) => `${entry.actor} ${entry.method} ${entry.route}`), [
    'ops POST /v1/devices/:id/block',
    'admin POST /v1/enrollment-tokens',
    'admin POST /v1/tokens'
  ])
  const [block, , tokenCreation] = log.entries
  t.is(block.role, 'operator')
  t.is(block.tokenId, ops.id)
  t.deepEqual(block.targetIds, [device.deviceId])
  t.deepEqual(block.summary.request, { reason: 'stolen' })
  t.is(block.summary.result.status, 'blocked')
  t.is(block.status, 200)
  t.regex(block.address, /127\.0\.0\.1/)
  t.false(Number.isNaN(Date.parse(block.at)))
  t.is(tokenCreation.userAgent, 'audit-test')
  t.deepEqual(tokenCreation.targetIds, [ops.id])
  t.false(JSON.stringify(log).includes(ops.token), 'the new token\'s secret is not in the log')
  t.false(JSON.stringify(log).includes(c.adminToken), 'the caller\'s secret is not in the log')

  const { body: byOps } = await c.http.get('/v1/audit?actor=ops').set('authorization', admin).expect(200)
  t.is(byOps.entries.length, 1)
  const { body: future } = await c.http.get(`/v1/audit?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`).set('authorization', admin).expect(200)
  t.deepEqual(future.entries, [])
  const { body: past } = await c.http.get(`/v1/audit?until=${encodeURIComponent(new Date(Date.now() - 3600_000).toISOString())}`).set('authorization', admin).expect(200)
  t.deepEqual(past.entries, [])
  await c.close()
})

test('the audit log pages with a cursor and loses nothing between pages', async t => {
  const c = await openTestCoordinator()
  const admin = bearer(c.adminToken)
  for (let index = 0; index < 7; index++) await c.http.post('/v1/enrollment-tokens').set('authorization', admin).send({ site: `site-${index}` }).expect(201)
  const seen: string[] = []
  let cursor: string | undefined
  let pages = 0
  do {
    const { body } = await c.http.get(`/v1/audit?limit=3${cursor !== undefined ? `&cursor=${encodeURIComponent(cursor)}` : ''}`).set('authorization', admin).expect(200)
    seen.push(...body.entries.map((entry: any) => entry.summary.request.site))
    cursor = body.nextCursor
    pages++
  } while (cursor !== undefined)
  t.is(pages, 3)
  t.deepEqual(seen, ['site-6', 'site-5', 'site-4', 'site-3', 'site-2', 'site-1', 'site-0'])
  await c.close()
})

test('enrollment tokens carry expiry, uses, preset site and groups, and can be revoked', async t => {
  const c = await openTestCoordinator()
  const operator = bearer(c.adminToken)
  const { body: created } = await c.http.post('/v1/enrollment-tokens').set('authorization', operator).send({ expiresInSeconds: 3600, maxUses: 2, site: 'lyon', groups: ['kiosk'] }).expect(201)
  t.like(created, { maxUses: 2, uses: 0, site: 'lyon', groups: ['kiosk'], active: true })
  t.true(Math.abs(Date.parse(created.expiresAt) - Date.now() - 3600_000) < 60_000)
  const enroll = async (extra: object = {}) => await c.http.post('/v1/agents/enroll').send({ token: created.token, publicKey: randomBytes(32).toString('hex'), hostname: 'kiosk', platform: 'linux', arch: 'x64', ...extra })
  // The presets bind: another site or a group the token does not grant is refused, and spends no use.
  t.is((await enroll({ groups: ['lobby'] }).then(answer => answer.body.reason)), 'enrollment-groups-not-granted')
  t.is((await enroll({ site: 'paris' }).then(answer => answer.body.reason)), 'enrollment-site-mismatch')
  const first = await enroll({ groups: ['kiosk'], site: 'lyon' })
  t.is(first.body.site, 'lyon')
  t.deepEqual(first.body.groups, ['kiosk'])
  await enroll()
  const { body: listed } = await c.http.get('/v1/enrollment-tokens').set('authorization', operator).expect(200)
  t.like(listed.enrollmentTokens[0], { uses: 2, active: false })
  t.is(listed.enrollmentTokens[0].hash, undefined)
  t.is((await enroll()).body.reason, 'enrollment-token-used-up')
  const { body: another } = await c.http.post('/v1/enrollment-tokens').set('authorization', operator).send({}).expect(201)
  await c.http.post(`/v1/enrollment-tokens/${another.id}/revoke`).set('authorization', operator).expect(200)
  const refused = await c.http.post('/v1/agents/enroll').send({ token: another.token, publicKey: randomBytes(32).toString('hex'), hostname: 'x', platform: 'linux', arch: 'x64' })
  t.is(refused.body.reason, 'enrollment-token-revoked')
  await c.close()
})

test('blocking a device: its credential fails at once (a held request too), it leaves every target; unblocking restores it; retiring is for good', async t => {
  const c = await openTestCoordinator()
  const operator = bearer(c.adminToken)
  const device = await enrollDevice(c, { hostname: 'pc-lost', groups: ['finance'] })
  const other = await enrollDevice(c, { hostname: 'pc-kept', groups: ['finance'] })
  const { taskId } = await uploadAndTask(c, { groups: ['finance'] })
  const { body: first } = await c.http.get('/v1/agents/assignments').set('authorization', bearer(device.credential)).expect(200)
  t.is(first.assignments.length, 1)
  const held = c.http.get(`/v1/agents/assignments?waitSeconds=30&etag=${first.etag}`).set('authorization', bearer(device.credential)).then(response => response)
  await new Promise(resolve => setTimeout(resolve, 100))
  const { body: blocked } = await c.http.post(`/v1/devices/${device.deviceId}/block`).set('authorization', operator).send({ reason: 'reported stolen' }).expect(200)
  t.like(blocked, { status: 'blocked', statusReason: 'reported stolen', statusChangedBy: 'admin', online: false })
  const answer = await held
  t.is(answer.status, 401)
  t.is(answer.body.reason, 'device-blocked')
  const { body: rows } = await c.http.get(`/v1/tasks/${taskId}/devices`).set('authorization', operator).expect(200)
  t.deepEqual(rows.devices.map((row: any) => row.hostname), ['pc-kept'], 'a blocked device is no target')
  const { resolvedDevices } = await uploadAndTask(c, { all: true })
  t.is(resolvedDevices, 1)
  t.is((await c.services.devices.listActive()).map(d => d.id).join(), other.deviceId, 'the allow-list source has only the active device')

  await c.http.post(`/v1/devices/${device.deviceId}/unblock`).set('authorization', operator).expect(200)
  await c.http.get('/v1/agents/assignments').set('authorization', bearer(device.credential)).expect(200)

  const { body: retired } = await c.http.post(`/v1/devices/${device.deviceId}/retire`).set('authorization', operator).send({ reason: 'decommissioned' }).expect(200)
  t.is(retired.status, 'retired')
  t.is((await c.http.get('/v1/agents/assignments').set('authorization', bearer(device.credential))).body.reason, 'device-retired')
  t.is((await c.http.post(`/v1/devices/${device.deviceId}/unblock`).set('authorization', operator)).body.reason, 'device-retired')
  const { body: listed } = await c.http.get('/v1/devices').set('authorization', operator).expect(200)
  t.deepEqual(listed.devices.map((d: any) => [d.hostname, d.status]).sort(), [['pc-kept', 'active'], ['pc-lost', 'retired']])
  await c.close()
})

test('key rotation: the statement verifies with the old key, manifests go out re-signed, held requests answer at once, and the chain survives a restart', async t => {
  const c = await openTestCoordinator()
  const admin = bearer(c.adminToken)
  const device = await enrollDevice(c, { hostname: 'pc-rotate' })
  const { taskId } = await uploadAndTask(c)
  const { body: before } = await c.http.get('/v1/keys').set('authorization', admin).expect(200)
  t.is(before.sequence, 0)
  const oldKey = publicKeyFromHex(before.publicKey)
  const { body: first } = await c.http.get('/v1/agents/assignments').set('authorization', bearer(device.credential)).expect(200)
  const oldManifest = first.assignments[0].manifest
  const held = c.http.get(`/v1/agents/assignments?waitSeconds=30&etag=${first.etag}`).set('authorization', bearer(device.credential)).then(response => response)
  await new Promise(resolve => setTimeout(resolve, 100))

  const { body: rotated } = await c.http.post('/v1/keys/rotate').set('authorization', admin).expect(200)
  t.is(rotated.previousKeyId, before.keyId)
  t.not(rotated.keyId, before.keyId)
  t.is(rotated.sequence, 1)
  t.is(rotated.unfinishedTasks, 1)
  const statement = openKeyRotation(rotated.statement, oldKey)
  t.is(statement.newPublicKey, rotated.publicKey)

  const { body: answer } = await held
  t.not(answer.etag, first.etag, 'the rotation woke the held request')
  t.deepEqual(answer.coordinatorKey, { keyId: rotated.keyId, sequence: 1 })
  const followed = followKeyRotations({ publicKey: oldKey, sequence: 0 }, answer.keyRotations)
  const newKey = followed.pinned.publicKey
  const resigned = answer.assignments[0].manifest
  t.is(resigned.payload, oldManifest.payload, 'the same manifest bytes')
  t.is(openManifest(resigned, { keys: trustKeys(newKey) }).manifest.taskId, taskId)
  t.is(t.throws(() => openManifest(resigned, { keys: trustKeys(oldKey) }))?.name, 'UnknownKeyError')

  // New tasks are signed by the new key; new devices pin it at enrollment.
  const { taskId: later } = await uploadAndTask(c)
  const { body: enrolled } = await c.http.post('/v1/agents/enroll').send({ token: (await c.http.post('/v1/enrollment-tokens').set('authorization', admin).send({})).body.token, publicKey: randomBytes(32).toString('hex'), hostname: 'pc-new', platform: 'linux', arch: 'x64' }).expect(201)
  t.is(enrolled.coordinatorPublicKey, rotated.publicKey)
  t.is(enrolled.coordinatorKeySequence, 1)
  const stored = await c.services.tasks.get(later)
  t.is(stored.manifest.keyId, rotated.keyId)

  // A restart keeps the new key and the chain.
  await c.services.close()
  const reopened = await openServices({ dataDir: c.dataDir, ...(c.store !== undefined ? { store: c.store } : {}), logger: silentLogger() })
  t.is(reopened.keyring.current.keyId, rotated.keyId)
  t.deepEqual(reopened.keyring.rotations, answer.keyRotations)
  t.is(reopened.manifests.current(await reopened.tasks.get(taskId)).keyId, rotated.keyId, 'tasks signed before the rotation still go out re-signed')
  t.is(fromBase64(reopened.manifests.current(await reopened.tasks.get(taskId)).payload).byteLength, fromBase64(oldManifest.payload).byteLength)
  await reopened.close()
  await c.close().catch(() => {})
})

test('concurrent enrollments never take more uses than an enrollment token has', async t => {
  const c = await openTestCoordinator()
  const { body: created } = await c.http.post('/v1/enrollment-tokens').set('authorization', bearer(c.adminToken)).send({ maxUses: 3 }).expect(201)
  const answers = await Promise.all(Array.from({ length: 10 }, async (_, index) => await c.http.post('/v1/agents/enroll').send({ token: created.token, publicKey: randomBytes(32).toString('hex'), hostname: `rush-${index}`, platform: 'linux', arch: 'x64' })))
  t.is(answers.filter(answer => answer.status === 201).length, 3)
  t.true(answers.filter(answer => answer.status !== 201).every(answer => answer.body.reason === 'enrollment-token-used-up'))
  t.is((await c.services.devices.list()).length, 3)
  await c.close()
})
