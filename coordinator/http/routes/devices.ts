import { z } from 'zod'
import type { DeviceStatus } from '../../store/types.js'
import type { RouteModule } from '../context.js'

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
    return { ...services.devices.view(device), tasks }
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
