import { createWindowSchema, editWindowSchema, windowQuerySchema } from '../../windows/service.js'
import type { RouteModule } from '../context.js'

export const windowRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/maintenance-windows', tag: 'maintenance windows', access: 'operator', body: createWindowSchema,
    summary: 'Create a maintenance window for sites, groups or devices: recurring (days, start, duration) or one-off (date, start, duration), in an IANA zone or each device\'s own; tasks that respect windows install and reboot only inside one',
    responses: { 201: { description: 'the window, with its next openings when it has a zone' }, 400: { description: 'no sites, groups or devices; days and date both or neither; a recurring window over a week; an unknown zone' } }
  }, async ({ ctx, body, actor }) => {
    const record = await services.windows.create(body, actor)
    services.logger.info({ windowId: record.id, by: actor }, 'maintenance window created')
    ctx.status = 201
    ctx.set('Location', `/v1/maintenance-windows/${record.id}`)
    return services.windows.view(record)
  })

  routes.add({
    method: 'get', path: '/v1/maintenance-windows', tag: 'maintenance windows', access: 'viewer', query: windowQuerySchema,
    summary: 'List maintenance windows: all, those of a site or group, or those that apply to a device (its own, its site\'s, its groups\')',
    responses: { 200: { description: '{ windows }' }, 404: { description: 'no such device' } }
  }, async ({ query }) => {
    const device = query.device !== undefined ? await services.devices.get(query.device) : undefined
    const windows = services.windows.list({ ...(query.site !== undefined ? { site: query.site } : {}), ...(query.group !== undefined ? { group: query.group } : {}), ...(device !== undefined ? { device } : {}) })
    return { windows: windows.map(record => services.windows.view(record)) }
  })

  routes.add({
    method: 'get', path: '/v1/maintenance-windows/:id', tag: 'maintenance windows', access: 'viewer',
    summary: 'A maintenance window, with its next openings when it has a zone',
    responses: { 200: { description: 'the window' }, 404: { description: 'no such window' } }
  }, ({ params }) => services.windows.view(services.windows.get(params.id)))

  routes.add({
    method: 'patch', path: '/v1/maintenance-windows/:id', tag: 'maintenance windows', access: 'operator', body: editWindowSchema,
    summary: 'Edit a maintenance window; the devices it concerns (before and after) receive their new windows at once',
    responses: { 200: { description: 'the window' }, 400: { description: 'invalid' }, 404: { description: 'no such window' } }
  }, async ({ params, body, actor }) => {
    const record = await services.windows.edit(params.id, body, actor)
    services.logger.info({ windowId: record.id, fields: Object.keys(body), by: actor }, 'maintenance window edited')
    return services.windows.view(record)
  })

  routes.add({
    method: 'delete', path: '/v1/maintenance-windows/:id', tag: 'maintenance windows', access: 'operator',
    summary: 'Delete a maintenance window',
    responses: { 200: { description: 'the deleted window' }, 404: { description: 'no such window' } }
  }, async ({ params, actor }) => {
    const record = await services.windows.delete(params.id)
    services.logger.info({ windowId: record.id, by: actor }, 'maintenance window deleted')
    return { deleted: record }
  })
}
