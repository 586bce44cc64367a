import test from 'ava'
import { openWindowSet, trustKeys } from '../../protocol/index.js'
import { enrollDevice, FakeClock, openTestCoordinator } from '../helpers/coordinator.js'

test('maintenance windows: create, list by scope and by device, edit, delete; each device receives its own, signed', async t => {
  const clock = new FakeClock(Date.parse('2026-03-04T12:00:00Z'))
  const c = await openTestCoordinator({ now: clock.now })
  t.teardown(async () => { await c.close() })
  const auth = `Bearer ${c.adminToken}`
  const berlin = await enrollDevice(c, { hostname: 'ber-1', site: 'berlin', groups: ['laptops'] })
  const paris = await enrollDevice(c, { hostname: 'par-1', site: 'paris' })

  const { body: nights } = await c.http.post('/v1/maintenance-windows').set('authorization', auth)
    .send({ name: 'Berlin nights', sites: ['berlin'], days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '22:00', durationMinutes: 240, timeZone: 'Europe/Berlin' }).expect(201)
  t.deepEqual(nights.nextOpenings, ['2026-03-04T21:00:00.000Z', '2026-03-05T21:00:00.000Z', '2026-03-06T21:00:00.000Z'])
  const { body: once } = await c.http.post('/v1/maintenance-windows').set('authorization', auth)
    .send({ name: 'Laptop migration', groups: ['laptops'], date: '2026-03-14', start: '09:00', durationMinutes: 120 }).expect(201)
  t.is(once.nextOpenings, undefined, 'a window in device time has no instant of its own')

  const refused = async (body: Record<string, unknown>, path: string): Promise<void> => {
    const { body: problem } = await c.http.post('/v1/maintenance-windows').set('authorization', auth).send({ name: 'bad', sites: ['berlin'], start: '22:00', durationMinutes: 60, ...body }).expect(400)
    t.true(problem.errors.some((error: any) => error.path === path), `${JSON.stringify(body)} → ${JSON.stringify(problem.errors)}`)
  }
  await refused({ days: ['mon'], date: '2026-03-14' }, 'days')
  await refused({}, 'days')
  await refused({ days: ['mon'], durationMinutes: 8 * 24 * 60 }, 'durationMinutes')
  await refused({ days: ['mon'], timeZone: 'Europe/Atlantis' }, 'timeZone')
  await refused({ days: ['mon'], start: '25:00' }, 'start')
  await refused({ days: ['mon'], sites: [] }, 'sites')

  const list = async (query = ''): Promise<string[]> => (await c.http.get(`/v1/maintenance-windows${query}`).set('authorization', auth).expect(200)).body.windows.map((w: any) => w.name)
  t.deepEqual(await list(), ['Berlin nights', 'Laptop migration'])
  t.deepEqual(await list('?site=berlin'), ['Berlin nights'])
  t.deepEqual(await list(`?device=${berlin.deviceId}`), ['Berlin nights', 'Laptop migration'])
  t.deepEqual(await list(`?device=${paris.deviceId}`), [])

  const windowsOf = async (device: typeof berlin): Promise<string[]> => {
    const { body } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${device.credential}`).expect(200)
    return openWindowSet(body.maintenanceWindows, trustKeys(c.services.keyring.current.publicKey)).windows.map(window => window.name).sort()
  }
  t.deepEqual(await windowsOf(berlin), ['Berlin nights', 'Laptop migration'])
  t.deepEqual(await windowsOf(paris), [])

  // A held request of a device the change concerns is answered at once with its new windows.
  const { body: before } = await c.http.get('/v1/agents/assignments').set('authorization', `Bearer ${paris.credential}`).expect(200)
  const held = c.http.get(`/v1/agents/assignments?waitSeconds=20&etag=${before.etag}`).set('authorization', `Bearer ${paris.credential}`)
  const answered = held.then(response => response.body)
  await new Promise(resolve => setTimeout(resolve, 100))
  await c.http.patch(`/v1/maintenance-windows/${nights.id}`).set('authorization', auth).send({ sites: ['berlin', 'paris'], start: '23:00' }).expect(200)
  const after = await answered
  t.not(after.etag, before.etag)
  t.deepEqual(openWindowSet(after.maintenanceWindows, trustKeys(c.services.keyring.current.publicKey)).windows.map(window => window.start), ['23:00'])

  await c.http.delete(`/v1/maintenance-windows/${once.id}`).set('authorization', auth).expect(200)
  await c.http.get(`/v1/maintenance-windows/${once.id}`).set('authorization', auth).expect(404)
  t.deepEqual(await windowsOf(berlin), ['Berlin nights'])

  const viewer = (await c.http.post('/v1/tokens').set('authorization', auth).send({ name: 'v', role: 'viewer' }).expect(201)).body.token
  await c.http.post('/v1/maintenance-windows').set('authorization', `Bearer ${viewer}`).send({ name: 'x', sites: ['x'], days: ['mon'], start: '01:00', durationMinutes: 1 }).expect(403)
})
