import { z } from 'zod'
import type { DeviceStatus } from '../../store/types.js'
import type { RouteModule } from '../context.js'
import { deviceListQuerySchema, deviceUpdateSchema } from '../../devices/service.js'

const statusChangeSchema = z.object({
  /** Why, for the device page and the audit log. */
  reason: z.string().trim().min(1).max(500).optional()
}).strict()

const STATUS_CHANGES: Array<{ action: string, status: DeviceStatus, summary: string }> = [
  { action: 'block', status: 'blocked', summary: 'Block a device: its credential fails at once, it leaves every target and the peer allow-list; reversible' },
  { action: 'unblock', status: 'active', summary: 'Unblock a blocked device: its credential works again' },
  { action: 'retire', status: 'retired', summary: 'Retire a device for good: its credential fails from now on, it leaves every target and the peer allow-list' }
]

export const deviceRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'get', path: '/v1/devices', tag: 'devices', access: 'viewer', query: deviceListQuerySchema,
    summary: 'List enrolled devices with site, groups, platform, online state and last contact, in id order; filter by status and site, page with limit (default 500, at most 5000) and cursor',
    responses: { 200: { description: '{ devices, nextCursor?, total? }: follow nextCursor until it is absent (a page may be short and still have one)' }, 400: { description: 'a bad filter, limit or cursor (invalid-cursor)' } }
  }, async ({ query }) => {
    const page = await services.devices.page(query)
    return { ...page, devices: page.devices.map(device => services.devices.view(device)) }
  })

  routes.add({
    method: 'get', path: '/v1/devices/:id', tag: 'devices', access: 'viewer',
    summary: 'A device and its task history',
    responses: { 200: { description: 'the device with its tasks' }, 404: { description: 'no such device' } }
  }, async ({ params }) => {
    const device = await services.devices.get(params.id)
    const tasks = []
    for (const task of await services.tasks.list()) {
      const row = await services.tasks.row(task.id, device.id)
      if (row !== undefined) tasks.push({ ...row, taskName: task.name, taskStatus: task.status })
    }
    const users = services.directory.usersOf(device).map(({ id, displayName, department, role }) => ({ id, displayName, department, role }))
    return { ...services.devices.view(device), users, tasks }
  })

  routes.add({
    method: 'patch', path: '/v1/devices/:id', tag: 'devices', access: 'operator', body: deviceUpdateSchema,
    summary: 'Move a device to another site, change its static groups (groups, or addGroups/removeGroups; tasks targeting them pick it up), or grant or withdraw the site-cache role (siteCache)',
    responses: { 200: { description: 'the device' }, 404: { description: 'no such device' } }
  }, async ({ params, body, actor }) => {
    const device = await services.devices.update(params.id, body, actor)
    services.logger.info({ deviceId: device.id, site: device.site, groups: device.groups, siteCache: device.siteCache === true, by: actor }, 'device updated')
    return services.devices.view(device)
  })

  for (const change of STATUS_CHANGES) {
    routes.add({
      method: 'post', path: `/v1/devices/:id/${change.action}`, tag: 'devices', access: 'operator', body: statusChangeSchema, bodyOptional: true,
      summary: change.summary,
      responses: { 200: { description: 'the device' }, 404: { description: 'no such device' }, 409: { description: 'the device is retired' } }
    }, async ({ params, body, actor }) => {
      const device = await services.devices.setStatus(params.id, change.status, actor, body.reason)
      services.logger.info({ deviceId: device.id, status: device.status, by: actor, reason: body.reason }, `device ${change.action}`)
      return services.devices.view(device)
    })
  }

  routes.add({
    method: 'post', path: '/v1/devices/:id/clear-cache', tag: 'devices', access: 'operator',
    summary: 'Ask a device to empty its chunk cache of every package no task needs; it does so at its next assignments answer',
    responses: { 202: { description: 'the request id; the device view shows cacheClearedRequest once done' }, 404: { description: 'no such device' } }
  }, async ({ ctx, params, actor }) => {
    const device = await services.devices.requestCacheClear(params.id, actor)
    ctx.status = 202
    return { deviceId: device.id, clearCacheRequest: device.clearCacheRequest }
  })
}
