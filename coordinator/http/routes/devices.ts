import type { RouteModule } from '../context.js'

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
