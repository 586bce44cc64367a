import { requireRole } from '../../auth/tokens.js'
import type { RouteModule } from '../context.js'

export const deviceRoutes: RouteModule = (router, services) => {
  router.get('/v1/devices', async ctx => {
    requireRole(ctx.state.principal, 'viewer')
    const devices = await services.devices.list()
    ctx.body = { devices: devices.map(device => services.devices.view(device)) }
  })

  router.get('/v1/devices/:id', async ctx => {
    requireRole(ctx.state.principal, 'viewer')
    const device = await services.devices.get(ctx.params.id)
    const tasks = []
    for (const task of await services.tasks.list()) {
      const row = await services.tasks.row(task.id, device.id)
      if (row !== undefined) tasks.push({ ...row, taskName: task.name, taskStatus: task.status })
    }
    ctx.body = { ...services.devices.view(device), tasks }
  })
}
