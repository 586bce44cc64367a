import test from 'ava'
import { openApiPath } from '../../coordinator/http/openapi.js'
import { openTestCoordinator } from '../helpers/coordinator.js'

test('every route the coordinator serves is in its OpenAPI document, with its method', async t => {
  const c = await openTestCoordinator()
  const { body: document } = await c.http.get('/v1/openapi.json').set('authorization', `Bearer ${c.adminToken}`).expect(200)
  t.is(document.openapi, '3.1.0')
  const served = new Set<string>()
  // The router's own layers are the truth of what is served, whatever the table says.
  for (const layer of (c.app as any).middleware.flatMap((fn: any) => fn.router?.stack ?? [])) {
    for (const method of layer.methods as string[]) {
      if (method === 'HEAD') continue
      served.add(`${method.toLowerCase()} ${openApiPath(layer.path)}`)
    }
  }
  t.true(served.size >= 20, `${served.size} routes served`)
  const documented = new Set<string>()
  for (const [path, operations] of Object.entries(document.paths as Record<string, Record<string, unknown>>)) {
    for (const method of Object.keys(operations)) documented.add(`${method} ${path}`)
  }
  const missing = [...served].filter(route => !documented.has(route))
  t.deepEqual(missing, [], 'routes served but not documented')
  const phantom = [...documented].filter(route => !served.has(route))
  t.deepEqual(phantom, [], 'routes documented but not served')
  await c.close()
})

test('request schemas in the document are the validating schemas', async t => {
  const c = await openTestCoordinator()
  const { body: document } = await c.http.get('/v1/openapi.json').set('authorization', `Bearer ${c.adminToken}`).expect(200)
  const create = document.paths['/v1/tasks'].post
  const schema = create.requestBody.content['application/json'].schema
  t.deepEqual(schema.required.sort(), ['action', 'packageId', 'targets'])
  t.false(schema.additionalProperties)
  t.deepEqual(create.security, [{ bearer: [] }])
  t.deepEqual(document.paths['/v1/health'].get.security, [])
  const upload = document.paths['/v1/packages'].post.requestBody.content['multipart/form-data']
  t.deepEqual(upload.schema.required, ['metadata', 'file'])
  t.is(document.paths['/v1/tasks/{id}'].get.parameters[0].name, 'id')
  await c.close()
})

test('the document is not public', async t => {
  const c = await openTestCoordinator()
  const response = await c.http.get('/v1/openapi.json')
  t.is(response.status, 401)
  await c.close()
})
