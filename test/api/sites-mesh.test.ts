import test from 'ava'
import { randomBytes } from 'node:crypto'
import { parseCidr, AddressRange, InvalidCidrError } from '../../coordinator/sites/cidr.js'
import { placeDevice } from '../../coordinator/sites/placement.js'
import { enrollDevice, openTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js'
import { openDeviceCertificate, trustKeys } from '../../protocol/index.js'

const admin = (c: TestCoordinator): string => `Bearer ${c.adminToken}`

test('CIDRs are checked and put in canonical form; ranges match IPv4, mapped IPv4 and IPv6', t => {
  const table: Array<[string, string]> = [['10.1.2.3/24', '10.1.2.0/24'], ['10.1.2.3', '10.1.2.3/32'], ['0.0.0.0/0', '0.0.0.0/0'], ['FD00::/8', 'fd00::/8']]
  for (const [input, canonical] of table) t.is(parseCidr(input).text, canonical, input)
  for (const bad of ['10.1.2.3/33', 'fd00::/129', 'berlin', '10.1.2/24', '10.1.2.3/x']) t.throws(() => parseCidr(bad), { instanceOf: InvalidCidrError }, bad)
  const range = new AddressRange(parseCidr('10.1.0.0/16'))
  t.true(range.contains('10.1.200.7'))
  t.true(range.contains('::ffff:10.1.0.1'))
  t.false(range.contains('10.2.0.1'))
  t.false(range.contains('fd00::1'))
  t.true(new AddressRange(parseCidr('fd00::/8')).contains('fd12::1'))
})

test('placement: a declared site wins, then a boundary, then the default site', t => {
  t.deepEqual(placeDevice('berlin', 'paris'), { site: 'berlin', siteSource: 'declared' })
  t.deepEqual(placeDevice(undefined, 'paris'), { site: 'paris', siteSource: 'boundary' })
  t.deepEqual(placeDevice(undefined, undefined), { site: 'default', siteSource: 'default' })
})

test('sites and boundaries through the API; a boundary places devices that declared no site', async t => {
  const c = await openTestCoordinator()
  try {
    const refused = await c.http.post('/v1/boundaries').set('authorization', admin(c)).send({ cidr: '127.0.0.0/8', site: 'loopback' }).expect(400)
    t.regex(refused.body.detail, /does not exist/)
    await c.http.post('/v1/sites').set('authorization', admin(c)).send({ name: 'loopback', description: 'this host' }).expect(201)
    t.is((await c.http.post('/v1/sites').set('authorization', admin(c)).send({ name: 'loopback' }).expect(409)).body.reason, 'site-exists')
    t.is((await c.http.post('/v1/boundaries').set('authorization', admin(c)).send({ cidr: 'not-a-range', site: 'loopback' }).expect(400)).body.reason, 'invalid-request')

    const before = await enrollDevice(c, { hostname: 'pc-before' })
    const declared = await enrollDevice(c, { hostname: 'pc-declared', site: 'berlin' })
    const { body: shownBefore } = await c.http.get(`/v1/devices/${before.deviceId}`).set('authorization', admin(c)).expect(200)
    t.is(shownBefore.site, 'default')

    const { body: boundary } = await c.http.post('/v1/boundaries').set('authorization', admin(c)).send({ cidr: '127.0.0.1/8', site: 'loopback' }).expect(201)
    t.is(boundary.cidr, '127.0.0.0/8')
    t.is((await c.http.post('/v1/boundaries').set('authorization', admin(c)).send({ cidr: '127.0.0.0/8', site: 'loopback' }).expect(409)).body.reason, 'boundary-exists')
    // supertest connects from loopback: the device without a declared site moves in; the declared one stays.
    await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${before.credential}`).expect(200)
    const moved = await waitForSite(c, before.deviceId, 'loopback')
    t.is(moved.siteSource, 'boundary')
    t.is((await c.http.get(`/v1/devices/${declared.deviceId}`).set('authorization', admin(c)).expect(200)).body.site, 'berlin')
    const after = await enrollDevice(c, { hostname: 'pc-after' })
    t.is((await c.http.get(`/v1/devices/${after.deviceId}`).set('authorization', admin(c)).expect(200)).body.site, 'loopback')

    const { body: sites } = await c.http.get('/v1/sites').set('authorization', admin(c)).expect(200)
    const loopback = sites.sites.find((site: any) => site.name === 'loopback')
    t.is(loopback.devices, 2)
    t.deepEqual(loopback.boundaries, ['127.0.0.0/8'])
    t.true(sites.sites.some((site: any) => site.name === 'berlin' && site.defined === false))

    t.is((await c.http.delete('/v1/sites/loopback').set('authorization', admin(c)).expect(409)).body.reason, 'site-in-use')
    await c.http.delete(`/v1/boundaries/${boundary.id}`).set('authorization', admin(c)).expect(200)
    await waitForSite(c, before.deviceId, 'default')
    await c.http.delete('/v1/sites/loopback').set('authorization', admin(c)).expect(204)
    const { body: boundaries } = await c.http.get('/v1/boundaries').set('authorization', admin(c)).expect(200)
    t.deepEqual(boundaries.boundaries, [])
  } finally {
    await c.close()
  }
})

test('a device whose site follows its address changes site when it roams', async t => {
  const c = await openTestCoordinator()
  try {
    await c.services.sites.createSite({ name: 'office' }, 'test')
    await c.services.sites.createSite({ name: 'home' }, 'test')
    await c.services.sites.addBoundary({ cidr: '10.1.0.0/16', site: 'office' }, 'test')
    await c.services.sites.addBoundary({ cidr: '10.0.0.0/8', site: 'home' }, 'test')
    const device = await enrollDevice(c, { hostname: 'laptop' })
    const changes: string[] = []
    c.services.devices.on('changed', id => { changes.push(id) })
    await c.services.devices.touch(await c.services.devices.get(device.deviceId), '10.1.4.5')
    t.is((await c.services.devices.get(device.deviceId)).site, 'office', 'the first boundary that contains the address')
    await c.services.devices.touch(await c.services.devices.get(device.deviceId), '::ffff:10.9.0.1')
    t.is((await c.services.devices.get(device.deviceId)).site, 'home')
    await c.services.devices.touch(await c.services.devices.get(device.deviceId), '192.168.1.10')
    t.is((await c.services.devices.get(device.deviceId)).site, 'default')
    t.is(changes.filter(id => id === device.deviceId).length, 3)
  } finally {
    await c.close()
  }
})

test('assignments carry the site peers with their addresses, the device certificate, and a pending cache clear', async t => {
  const c = await openTestCoordinator()
  try {
    const a = await enrollDevice(c, { hostname: 'a', site: 'berlin' })
    const b = await enrollDevice(c, { hostname: 'b', site: 'berlin' })
    const other = await enrollDevice(c, { hostname: 'x', site: 'paris' })
    const self = (device: { credential: string }, body: object) => c.http.put('/v1/agents/self').set('authorization', `Bearer ${device.credential}`).send(body)
    await self(b, { peerAddresses: ['/ip4/127.0.0.2/tcp/8651'], connectedPeers: 1, cache: { usedBytes: 10, limitBytes: 100, pinnedBytes: 0, packages: 1 } }).expect(200)
    await self(other, { peerAddresses: ['/ip4/127.0.0.9/tcp/8651'] }).expect(200)
    t.is((await self(b, { peerAddresses: ['not a multiaddr'] }).expect(400)).body.reason, 'invalid-request')
    await c.http.put('/v1/agents/self').set('authorization', admin(c)).send({ peerAddresses: [] }).expect(403)

    const { body: first } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${a.credential}`).expect(200)
    t.deepEqual(first.peers.map((peer: any) => [peer.deviceId, peer.addresses]), [[b.deviceId, ['/ip4/127.0.0.2/tcp/8651']]])
    const devices = (await c.http.get('/v1/devices').set('authorization', admin(c)).expect(200)).body.devices
    t.is(first.allowedPeerIds, undefined, 'no list of the organisation\'s devices')
    const certificate = openDeviceCertificate(first.certificate, { keys: trustKeys(c.services.key.publicKey), now: Date.now(), peerId: devices.find((device: any) => device.id === a.deviceId).peerId })
    t.like(certificate, { deviceId: a.deviceId, site: 'berlin' })
    t.deepEqual(first.revokedDeviceIds, [])
    t.deepEqual(first.prefetch, [])
    t.is(first.clearCacheRequest, undefined)
    const shown = (await c.http.get(`/v1/devices/${b.deviceId}`).set('authorization', admin(c)).expect(200)).body
    t.is(shown.connectedPeers, 1)
    t.deepEqual(shown.cache, { usedBytes: 10, limitBytes: 100, pinnedBytes: 0, packages: 1 })

    // A held request returns when a site peer's addresses change.
    const held = c.http.get(`/v1/agents/assignments?waitSeconds=20&etag=${first.etag as string}`).set('authorization', `Bearer ${a.credential}`)
    setTimeout(() => { void self(b, { peerAddresses: ['/ip4/127.0.0.3/tcp/8651'] }).then(() => {}) }, 200)
    const { body: second } = await held.expect(200)
    t.not(second.etag, first.etag)
    t.deepEqual(second.peers[0].addresses, ['/ip4/127.0.0.3/tcp/8651'])

    const { body: request } = await c.http.post(`/v1/devices/${a.deviceId}/clear-cache`).set('authorization', admin(c)).expect(202)
    t.is(request.clearCacheRequest.id, 1)
    const { body: third } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${a.credential}`).expect(200)
    t.is(third.clearCacheRequest, 1)
    await self(a, { peerAddresses: [], clearedCacheRequest: 1 }).expect(200)
    const { body: fourth } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${a.credential}`).expect(200)
    t.is(fourth.clearCacheRequest, undefined)
    t.is((await c.http.get(`/v1/devices/${a.deviceId}`).set('authorization', admin(c)).expect(200)).body.cacheClearedRequest, 1)
  } finally {
    await c.close()
  }
})

test('a site cache is handed the tasks that target its site, beyond its own assignments', async t => {
  const c = await openTestCoordinator()
  try {
    const cacheDevice = await enrollDevice(c, { hostname: 'dp', site: 'berlin' })
    const worker = await enrollDevice(c, { hostname: 'pc', site: 'berlin', groups: ['finance'] })
    await enrollDevice(c, { hostname: 'far', site: 'paris', groups: ['hr'] })
    // The agent offers the role; an operator grants it.
    await c.http.put('/v1/agents/self').set('authorization', `Bearer ${cacheDevice.credential}`).send({ peerAddresses: ['/ip4/127.0.0.1/tcp/1'], siteCache: true }).expect(200)
    const { body: granted } = await c.http.patch(`/v1/devices/${cacheDevice.deviceId}`).set('authorization', admin(c)).send({ siteCache: true }).expect(200)
    t.like(granted, { siteCache: true, siteCacheOffered: true })
    const file = Buffer.from('#!/bin/sh\n: ' + randomBytes(1000).toString('hex') + '\n')
    const { body: pkg } = await c.http.post('/v1/packages').set('authorization', admin(c)).field('metadata', JSON.stringify({ name: 'tool', version: '1' })).attach('file', file, 'tool.sh').expect(201)
    const { body: forFinance } = await c.http.post('/v1/tasks').set('authorization', admin(c)).send({ packageId: pkg.id, action: 'install', targets: { groups: ['finance'] } }).expect(201)
    await c.http.post('/v1/tasks').set('authorization', admin(c)).send({ packageId: pkg.id, action: 'install', targets: { groups: ['hr'] } }).expect(201)
    const { body } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${cacheDevice.credential}`).expect(200)
    t.deepEqual(body.assignments, [])
    t.deepEqual(body.prefetch.map((item: any) => item.taskId), [forFinance.id])
    const { body: workerAnswer } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${worker.credential}`).expect(200)
    t.deepEqual(workerAnswer.prefetch, [], 'only site caches prefetch')
  } finally {
    await c.close()
  }
})

async function waitForSite (c: TestCoordinator, deviceId: string, site: string): Promise<any> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const { body } = await c.http.get(`/v1/devices/${deviceId}`).set('authorization', admin(c)).expect(200)
    if (body.site === site) return body
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  throw new Error(`device ${deviceId} did not move to ${site}`)
}

test('the new routes refuse callers without a token, and devices may not manage sites', async t => {
  const c = await openTestCoordinator()
  try {
    const routes: Array<[string, string]> = [
      ['get', '/v1/sites'], ['post', '/v1/sites'], ['delete', '/v1/sites/x'], ['get', '/v1/boundaries'], ['post', '/v1/boundaries'],
      ['delete', '/v1/boundaries/x'], ['post', '/v1/devices/x/clear-cache'], ['put', '/v1/agents/self']
    ]
    for (const [method, path] of routes) t.is((await (c.http as any)[method](path)).status, 401, `${method} ${path}`)
    const device = await enrollDevice(c)
    await c.http.post('/v1/sites').set('authorization', `Bearer ${device.credential}`).send({ name: 'x' }).expect(403)
    await c.http.post(`/v1/devices/${device.deviceId}/clear-cache`).set('authorization', `Bearer ${device.credential}`).expect(403)
    t.is((await c.http.post('/v1/devices/dev-nope/clear-cache').set('authorization', admin(c)).expect(404)).body.reason, 'not-found')
  } finally {
    await c.close()
  }
})

test('past the bound of held assignments requests a new one is answered 503 with Retry-After, as problem+json; a held one still answers', async t => {
  const c = await openTestCoordinator({ services: { maxHeldAssignmentRequests: 1 } })
  try {
    const a = await enrollDevice(c, { hostname: 'held-a', site: 'busy' })
    const b = await enrollDevice(c, { hostname: 'held-b', site: 'busy' })
    const etagOf = async (device: { credential: string }): Promise<string> => (await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${device.credential}`).expect(200)).body.etag
    const first = await etagOf(a)
    const second = await etagOf(b)
    const held = c.http.get(`/v1/agents/assignments?waitSeconds=2&etag=${first}`).set('authorization', `Bearer ${a.credential}`).then(response => response)
    await waitUntil(() => c.services.assignments.heldRequests === 1)
    const refused = await c.http.get(`/v1/agents/assignments?waitSeconds=2&etag=${second}`).set('authorization', `Bearer ${b.credential}`).expect(503)
    t.is(refused.body.reason, 'coordinator-busy')
    t.regex(refused.headers['content-type'], /application\/problem\+json/)
    t.true(Number(refused.headers['retry-after']) >= 1)
    t.is((await held).status, 200)
  } finally {
    await c.close()
  }
})

async function waitUntil (condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise(resolve => setTimeout(resolve, 10))
}
