import { addPublisherSchema } from '../../publishers/service.js'
import type { RouteModule } from '../context.js'

export const publisherRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/publishers', tag: 'security', access: 'admin', body: addPublisherSchema,
    summary: 'Register a publisher key (ed25519, hex) for security verification',
    responses: { 201: { description: 'the publisher key with its key id' }, 409: { description: 'already registered' } }
  }, async ({ ctx, body, actor }) => {
    const record = await services.publishers.add(body, actor)
    services.logger.info({ keyId: record.keyId, name: record.name, by: actor }, 'publisher key registered')
    ctx.status = 201
    return record
  })

  routes.add({
    method: 'get', path: '/v1/publishers', tag: 'security', access: 'viewer',
    summary: 'Registered publisher keys',
    responses: { 200: { description: '{ publishers }' } }
  }, async () => ({ publishers: await services.publishers.list() }))

  routes.add({
    method: 'delete', path: '/v1/publishers/:keyId', tag: 'security', access: 'admin',
    summary: 'Remove a publisher key: its signatures no longer verify new uploads or tasks',
    responses: { 200: { description: 'the removed key' }, 404: { description: 'no such key' } }
  }, async ({ params, actor }) => {
    const record = await services.publishers.remove(params.keyId)
    services.logger.info({ keyId: record.keyId, by: actor }, 'publisher key removed')
    return record
  })
}
