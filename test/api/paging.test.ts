import test from 'ava'
import { randomBytes } from 'node:crypto'
import { signStatusRecord, type StatusRecord } from '../../protocol/index.js'
import { enrollDevice, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n: ' + randomBytes(2_000).toString('hex') + '\n')

interface Fleet {
  c: TestCoordinator
  devices: Array<EnrolledDevice & { site: string, hostname: string }>
  blocked: Set<string>
  admin: string
}

/** 23 devices: 12 at site north, 11 at south; three of north blocked. */
async function fleet (): Promise<Fleet> {
  const c = await openTestCoordinator()
  const devices: Fleet['devices'] = []
  for (let i = 0; i < 23; i++) {
    const site = i % 2 === 0 ? 'north' : 'south'
    const hostname = `pc-${site}-${String(i).padStart(2, '0')}`
    devices.push({ ...await enrollDevice(c, { site, hostname }), site, hostname })
  }
  const admin = `Bearer ${c.adminToken}`
  const blocked = new Set(devices.filter(device => device.site === 'north').slice(0, 3).map(device => device.deviceId))
  for (const id of blocked) await c.http.post(`/v1/devices/${id}/block`).set('authorization', admin).send({}).expect(200)
  return { c, devices, blocked, admin }
}

/** Follows nextCursor from the first page; checks each page's size and that the cursor ends the listing. */
async function everyPage (c: TestCoordinator, admin: string, path: string, key: string, limit: number): Promise<{ items: any[], pages: number[] }> {
  const items: any[] = []
  const pages: number[] = []
  let cursor: string | undefined
  for (let guard = 0; guard < 100; guard++) {
    const separator = path.includes('?') ? '&' : '?'
    const { body } = await c.http.get(`${path}${separator}limit=${limit}${cursor !== undefined ? `&cursor=${encodeURIComponent(cursor)}` : ''}`).set('authorization', admin).expect(200)
    items.push(...body[key])
    pages.push(body[key].length)
    cursor = body.nextCursor
    if (cursor === undefined) return { items, pages }
  }
  throw new Error(`${path} never ended`)
}

function sortedIds (ids: string[]): string[] {
  return [...ids].sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
}

test('GET /v1/devices pages in id order: limit, cursor continuation, totals', async t => {
  const { c, devices, admin } = await fleet()
  const all = sortedIds(devices.map(device => device.deviceId))

  const { body: first } = await c.http.get('/v1/devices').set('authorization', admin).expect(200)
  t.is(first.devices.length, 23, 'the default page (500) holds a small fleet whole')
  t.is(first.nextCursor, undefined)
  t.is(first.total, 23)
  t.deepEqual(first.devices.map((device: any) => device.id), all, 'in id order')

  const paged = await everyPage(c, admin, '/v1/devices', 'devices', 5)
  t.deepEqual(paged.pages, [5, 5, 5, 5, 3])
  t.deepEqual(paged.items.map((device: any) => device.id), all, 'the pages hold every device once, in order')

  const exact = await everyPage(c, admin, '/v1/devices', 'devices', 23)
  t.deepEqual(exact.pages, [23], 'a page that ends the listing carries no cursor')
  await c.close()
})

test('GET /v1/devices filters by site and status, each page of the filtered listing', async t => {
  const { c, devices, blocked, admin } = await fleet()
  const north = everyPage(c, admin, '/v1/devices?site=north', 'devices', 4)
  t.deepEqual((await north).items.map((device: any) => device.id), sortedIds(devices.filter(device => device.site === 'north').map(device => device.deviceId)))
  const { body: southTotal } = await c.http.get('/v1/devices?site=south&limit=1').set('authorization', admin).expect(200)
  t.is(southTotal.total, 11)
  t.is(southTotal.devices.length, 1)
  t.truthy(southTotal.nextCursor)

  const { body: blockedPage } = await c.http.get('/v1/devices?status=blocked').set('authorization', admin).expect(200)
  t.deepEqual(blockedPage.devices.map((device: any) => device.id), sortedIds([...blocked]))
  t.true(blockedPage.devices.every((device: any) => device.status === 'blocked'))
  t.is(blockedPage.total, 3)

  const activeNorth = await everyPage(c, admin, '/v1/devices?site=north&status=active', 'devices', 3)
  t.deepEqual(activeNorth.items.map((device: any) => device.id), sortedIds(devices.filter(device => device.site === 'north' && !blocked.has(device.deviceId)).map(device => device.deviceId)))
  // Filtered by status within a site, the last full page may not know that nothing follows: an empty page can end the listing.
  t.deepEqual(activeNorth.pages.filter(size => size > 0), [3, 3, 3])

  const { body: nowhere } = await c.http.get('/v1/devices?site=nowhere').set('authorization', admin).expect(200)
  t.deepEqual(nowhere, { devices: [], total: 0 })
  await c.close()
})

test('GET /v1/devices refuses a bad cursor, limit or filter with problem+json 400', async t => {
  const { c, admin } = await fleet()
  const refused = async (path: string, reason: string): Promise<void> => {
    const answer = await c.http.get(path).set('authorization', admin)
    t.is(answer.status, 400, path)
    t.is(answer.type, 'application/problem+json', path)
    t.is(answer.body.reason, reason, path)
  }
  await refused('/v1/devices?cursor=not-a-cursor', 'invalid-cursor')
  await refused(`/v1/devices?cursor=${Buffer.from('["devices","",""]').toString('base64url')}`, 'invalid-cursor')
  const { body: north } = await c.http.get('/v1/devices?site=north&limit=2').set('authorization', admin).expect(200)
  await refused(`/v1/devices?site=south&cursor=${encodeURIComponent(north.nextCursor)}`, 'invalid-cursor')
  await refused(`/v1/devices?cursor=${encodeURIComponent(north.nextCursor)}`, 'invalid-cursor')
  // A cursor of the right shape whose store position was altered.
  await refused(`/v1/devices?site=north&cursor=${Buffer.from(JSON.stringify(['devices', 'site=north', 'tampered'])).toString('base64url')}`, 'invalid-cursor')
  await refused('/v1/devices?limit=0', 'invalid-request')
  await refused('/v1/devices?limit=5001', 'invalid-request')
  await refused('/v1/devices?limit=ten', 'invalid-request')
  await refused('/v1/devices?status=asleep', 'invalid-request')
  await refused('/v1/devices?colour=blue', 'invalid-request')
  await c.http.get('/v1/devices?limit=5000').set('authorization', admin).expect(200)
  await c.close()
})

test('GET /v1/tasks/:id/devices pages the rows of a task, filters by state and site, refuses a bad cursor', async t => {
  const { c, devices, blocked, admin } = await fleet()
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', admin)
    .field('metadata', JSON.stringify({ name: 'tool', version: '1.0' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', admin).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const active = devices.filter(device => !blocked.has(device.deviceId))
  t.is(task.resolvedDevices, 20)

  // Four devices report: two succeeded, two downloading.
  const report = async (device: EnrolledDevice, state: StatusRecord['state']): Promise<void> => {
    const record: StatusRecord = {
      type: 'meshdeploy.status', deviceId: device.deviceId, taskId: task.id, revision: 1, attempt: 1, seq: 1, state, at: Date.now(),
      bytesTotal: pkg.sizeBytes, bytesDone: state === 'succeeded' ? pkg.sizeBytes : 0, bytesFromPeers: 0, bytesFromOrigin: state === 'succeeded' ? pkg.sizeBytes : 0
    }
    await c.http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential}`).send({ records: [signStatusRecord(record, device.key)] }).expect(200)
  }
  const [a, b, d, e] = active
  await report(a, 'succeeded')
  await report(b, 'succeeded')
  await report(d, 'downloading')
  await report(e, 'downloading')

  const path = `/v1/tasks/${task.id}/devices`
  const { body: whole } = await c.http.get(path).set('authorization', admin).expect(200)
  t.is(whole.devices.length, 20)
  t.is(whole.nextCursor, undefined)
  t.deepEqual(whole.devices.map((row: any) => row.deviceId), sortedIds(active.map(device => device.deviceId)), 'in device id order, blocked devices left out')

  const paged = await everyPage(c, admin, path, 'devices', 6)
  t.deepEqual(paged.pages, [6, 6, 6, 2])
  t.deepEqual(paged.items, whole.devices, 'the pages hold the same rows as one page')

  const succeeded = await everyPage(c, admin, `${path}?state=succeeded`, 'devices', 1)
  t.deepEqual(succeeded.items.map((row: any) => row.deviceId), sortedIds([a.deviceId, b.deviceId]))
  const pending = await everyPage(c, admin, `${path}?state=pending`, 'devices', 5)
  t.is(pending.items.length, 16)
  t.true(pending.items.every((row: any) => row.state === 'pending'))
  const south = await everyPage(c, admin, `${path}?site=south`, 'devices', 4)
  t.deepEqual(south.items.map((row: any) => row.deviceId), sortedIds(active.filter(device => device.site === 'south').map(device => device.deviceId)))
  const southDownloading = await everyPage(c, admin, `${path}?site=south&state=downloading`, 'devices', 50)
  t.deepEqual(southDownloading.items.map((row: any) => row.deviceId), sortedIds([d, e].filter(device => device.site === 'south').map(device => device.deviceId)))

  const { body: firstPage } = await c.http.get(`${path}?limit=3`).set('authorization', admin).expect(200)
  for (const bad of ['garbage', Buffer.from('["devices","","x"]').toString('base64url')]) {
    const answer = await c.http.get(`${path}?cursor=${encodeURIComponent(bad)}`).set('authorization', admin)
    t.is(answer.status, 400)
    t.is(answer.type, 'application/problem+json')
    t.is(answer.body.reason, 'invalid-cursor')
  }
  const otherFilter = await c.http.get(`${path}?state=pending&cursor=${encodeURIComponent(firstPage.nextCursor)}`).set('authorization', admin)
  t.is(otherFilter.body.reason, 'invalid-cursor', 'a cursor is bound to its filters')
  const { body: other } = await c.http.post('/v1/tasks').set('authorization', admin).send({ packageId: pkg.id, action: 'install', targets: { sites: ['south'] } }).expect(201)
  const otherTask = await c.http.get(`/v1/tasks/${other.id}/devices?cursor=${encodeURIComponent(firstPage.nextCursor)}`).set('authorization', admin)
  t.is(otherTask.body.reason, 'invalid-cursor', 'and to its task')
  t.is((await c.http.get(`${path}?state=sleeping`).set('authorization', admin)).status, 400)
  t.is((await c.http.get(`${path}?limit=5001`).set('authorization', admin)).status, 400)
  await c.close()
})
