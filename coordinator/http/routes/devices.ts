import { z } from 'zod'
import type { DeviceStatus } from '../../store/types.js'
import type { RouteModule } from '../context.js'
import { deviceUpdateSchema } from '../../devices/service.js'

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
    method: 'get', path: '/v1/devices', tag: 'devices', access: 'viewer',
    summary: 'List enrolled devices with site, groups, platform, online state and last contact',
    responses: { 200: { description: '{ devices }' } }
  }, async () => ({ devices: (await services.devices.list()).map(device => services.devices.view(device)) }))

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
    summary: 'Move a device to another site or change its static groups (groups, or addGroups/removeGroups); tasks targeting them pick it up',
    responses: { 200: { description: 'the device' }, 404: { description: 'no such device' } }
  }, async ({ params, body, actor }) => {
    const device = await services.devices.update(params.id, body)
    services.logger.info({ deviceId: device.id, site: device.site, groups: device.groups, by: actor }, 'device updated')
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
}
