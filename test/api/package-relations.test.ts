import test from 'ava'
import { openTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js'

async function upload (c: TestCoordinator, name: string, version: string, metadata: Record<string, unknown> = {}, expected = 201): Promise<any> {
  const { body } = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`)
    .field('metadata', JSON.stringify({ name, version, ...metadata })).attach('file', Buffer.from(`#!/bin/sh\necho ${name} ${version}\n`), `${name}.sh`).expect(expected)
  return body
}

const detect = (name: string, version: string): Record<string, unknown> => ({ detection: { type: 'file', path: `/opt/${name}/${version}` } })

test('dependencies: by id or by name and minimum version; missing, undetectable and circular ones are refused at upload and nothing is kept', async t => {
  const c = await openTestCoordinator()
  t.teardown(async () => { await c.close() })
  const auth = `Bearer ${c.adminToken}`
  const base = await upload(c, 'base', '1.0', detect('base', '1.0'))
  const runtime = await upload(c, 'runtime', '2.1', { ...detect('runtime', '2.1'), dependsOn: [{ packageId: base.id }] })
  const app = await upload(c, 'app', '1.0', { ...detect('app', '1.0'), dependsOn: [{ name: 'runtime', minVersion: '2.0' }] })
  t.deepEqual(app.dependsOn, [{ name: 'runtime', minVersion: '2.0' }])

  const missing = await upload(c, 'tool', '1.0', { dependsOn: [{ name: 'runtime', minVersion: '3' }] }, 422)
  t.is(missing.reason, 'dependency-missing')
  t.is(missing.errors[0].path, 'dependsOn.0')
  const plain = await upload(c, 'plain', '1.0')
  t.is((await upload(c, 'tool', '1.0', { dependsOn: [{ packageId: plain.id }] }, 422)).reason, 'dependency-undetectable')

  // A newer runtime would be what app's `runtime >= 2.0` names: its dependency on app would close a circle.
  const cycle = await upload(c, 'runtime', '2.5', { ...detect('runtime', '2.5'), dependsOn: [{ name: 'app' }] }, 422)
  t.is(cycle.reason, 'dependency-cycle')
  t.regex(cycle.detail ?? cycle.title ?? JSON.stringify(cycle), /runtime 2\.5 → app 1\.0 → runtime 2\.5/)
  t.is((await c.http.get('/v1/packages').set('authorization', auth).expect(200)).body.packages.length, 4, 'nothing kept of a refused upload')
  const self = await upload(c, 'loop', '1.0', { ...detect('loop', '1.0'), dependsOn: [{ name: 'loop' }] }, 422)
  t.is(self.reason, 'dependency-cycle')

  // An edit cannot close a circle either, nor take away the detection rule another package relies on.
  t.is((await c.http.patch(`/v1/packages/${base.id}`).set('authorization', auth).send({ dependsOn: [{ packageId: app.id }] }).expect(422)).body.reason, 'dependency-cycle')
  t.is((await c.http.patch(`/v1/packages/${runtime.id}`).set('authorization', auth).send({ detection: null }).expect(422)).body.reason, 'dependency-undetectable')
  // Nor may a package be deleted while another depends on it and nothing else would do.
  t.is((await c.http.delete(`/v1/packages/${base.id}`).set('authorization', auth).expect(409)).body.reason, 'package-in-use')
  await c.http.delete(`/v1/packages/${app.id}`).set('authorization', auth).expect(200)
})

test('supersedence: upgrade or replace an existing, detectable package; replace needs its uninstall spec; no circles', async t => {
  const c = await openTestCoordinator()
  t.teardown(async () => { await c.close() })
  const auth = `Bearer ${c.adminToken}`
  const old = await upload(c, 'tool', '1.0', detect('tool', '1.0'))
  t.is((await upload(c, 'tool', '2.0', { ...detect('tool', '2.0'), supersedes: [{ packageId: old.id, mode: 'replace' }] }, 422)).reason, 'superseded-no-uninstall')
  const upgrade = await upload(c, 'tool', '2.0', { ...detect('tool', '2.0'), supersedes: [{ packageId: old.id, mode: 'upgrade' }] })
  t.deepEqual(upgrade.supersedes, [{ packageId: old.id, mode: 'upgrade' }])
  t.is((await c.http.patch(`/v1/packages/${old.id}`).set('authorization', auth).send({ supersedes: [{ packageId: upgrade.id, mode: 'upgrade' }] }).expect(422)).body.reason, 'supersedence-cycle')
  t.is((await c.http.delete(`/v1/packages/${old.id}`).set('authorization', auth).expect(409)).body.reason, 'package-in-use')
  await c.http.patch(`/v1/packages/${upgrade.id}`).set('authorization', auth).send({ supersedes: null }).expect(200)
  await c.http.delete(`/v1/packages/${old.id}`).set('authorization', auth).expect(200)
})
