import { z } from 'zod'
import { summarizePackage } from '../../packages/service.js'
import { decisionSchema, deviceRequestSchema, operatorRequestSchema } from '../../requests/service.js'
import type { RouteModule } from '../context.js'

const listQuerySchema = z.object({ status: z.enum(['pending', 'approved', 'denied']).optional(), deviceId: z.string().max(253).optional() }).strict()

export const requestRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/requests', tag: 'requests', access: 'operator', body: operatorRequestSchema,
    summary: 'Request a self-service package for a device (by id or host name) on behalf of a user',
    responses: { 201: { description: 'the request (approved at once with auto-approve)' }, 200: { description: 'the same request was already pending' }, 409: { description: 'the package is not approved for self-service' } }
  }, async ({ ctx, body, actor }) => {
    const { request, created } = await services.requests.createFor(body, actor)
    if (request.taskId !== undefined) await services.scheduler.tick()
    ctx.status = created ? 201 : 200
    return request
  })

  routes.add({
    method: 'get', path: '/v1/requests', tag: 'requests', access: 'viewer', query: listQuerySchema,
    summary: 'Self-service requests, newest first; filter by status or device',
    responses: { 200: { description: '{ requests }' } }
  }, async ({ query }) => ({ requests: await services.requests.list(query) }))

  routes.add({
    method: 'post', path: '/v1/requests/:id/approve', tag: 'requests', access: 'operator', body: decisionSchema, bodyOptional: true,
    summary: 'Approve a pending request: an install task for the device is created',
    responses: { 200: { description: 'the request with its taskId' }, 404: { description: 'no such request' }, 409: { description: 'already decided' } }
  }, async ({ params, body, actor }) => {
    const request = await services.requests.approve(params.id, actor, body.comment)
    await services.scheduler.tick()
    services.logger.info({ requestId: request.id, taskId: request.taskId, by: actor }, 'request approved')
    return request
  })

  routes.add({
    method: 'post', path: '/v1/requests/:id/deny', tag: 'requests', access: 'operator', body: decisionSchema, bodyOptional: true,
    summary: 'Deny a pending request',
    responses: { 200: { description: 'the request' }, 404: { description: 'no such request' }, 409: { description: 'already decided' } }
  }, async ({ params, body, actor }) => {
    const request = await services.requests.deny(params.id, actor, body.comment)
    services.logger.info({ requestId: request.id, by: actor }, 'request denied')
    return request
  })

  routes.add({
    method: 'get', path: '/v1/agents/catalog', tag: 'agents', access: 'device',
    summary: 'The self-service packages this device may request',
    responses: { 200: { description: '{ packages }' } }
  }, async ({ device }) => ({ packages: (await services.requests.catalog(device!)).map(pkg => { const { createdBy: _by, ...rest } = summarizePackage(pkg); return rest }) }))

  routes.add({
    method: 'post', path: '/v1/agents/requests', tag: 'agents', access: 'device', body: deviceRequestSchema,
    summary: 'The device requests a self-service package for itself',
    responses: { 201: { description: 'the request' }, 200: { description: 'the same request was already pending' }, 404: { description: 'the device\'s catalog has no such package (whether or not one exists that it may not request: a device cannot probe for packages)' } }
  }, async ({ ctx, body, device }) => {
    const { request, created } = await services.requests.create(body, device!, 'device')
    if (request.taskId !== undefined) await services.scheduler.tick()
    services.logger.info({ requestId: request.id, deviceId: device!.id, packageId: request.packageId, status: request.status }, 'device requested a package')
    ctx.status = created ? 201 : 200
    return request
  })

  routes.add({
    method: 'get', path: '/v1/agents/requests', tag: 'agents', access: 'device',
    summary: 'The requests of this device, newest first',
    responses: { 200: { description: '{ requests }' } }
  }, async ({ device }) => ({ requests: await services.requests.list({ deviceId: device!.id }) }))
}
