import { requireRole } from '../../auth/tokens.js'
import { createTaskSchema } from '../../tasks/service.js'
import { parseWith } from '../../validation.js'
import { readJson } from '../body.js'
import type { RouteModule } from '../context.js'

export const taskRoutes: RouteModule = (router, services) => {
  router.post('/v1/tasks', async ctx => {
    const principal = requireRole(ctx.state.principal, 'operator')
    const request = parseWith(createTaskSchema, await readJson(ctx), 'task')
    const { task, resolvedDevices } = await services.tasks.create(request, principal.name)
    services.logger.info({ taskId: task.id, packageId: task.packageId, resolvedDevices, by: principal.name }, 'task created')
    ctx.status = 201
    ctx.set('Location', `/v1/tasks/${task.id}`)
    ctx.body = { ...await services.tasks.view(task), resolvedDevices }
  })

  router.get('/v1/tasks', async ctx => {
    requireRole(ctx.state.principal, 'viewer')
    const tasks = await services.tasks.list()
    ctx.body = { tasks: await Promise.all(tasks.map(async task => await services.tasks.view(task))) }
  })

  router.get('/v1/tasks/:id', async ctx => {
    requireRole(ctx.state.principal, 'viewer')
    ctx.body = await services.tasks.view(await services.tasks.get(ctx.params.id))
  })

  router.get('/v1/tasks/:id/devices', async ctx => {
    requireRole(ctx.state.principal, 'viewer')
    const task = await services.tasks.get(ctx.params.id)
    ctx.body = { taskId: task.id, devices: await services.tasks.deviceRows(task) }
  })

  router.get('/v1/tasks/:id/devices/:deviceId/history', async ctx => {
    requireRole(ctx.state.principal, 'viewer')
    const task = await services.tasks.get(ctx.params.id)
    ctx.body = { taskId: task.id, deviceId: ctx.params.deviceId, records: await services.statuses.history(task.id, ctx.params.deviceId) }
  })

  router.post('/v1/tasks/:id/cancel', async ctx => {
    const principal = requireRole(ctx.state.principal, 'operator')
    const task = await services.tasks.cancel(ctx.params.id)
    services.logger.info({ taskId: task.id, by: principal.name }, 'task cancelled')
    ctx.body = await services.tasks.view(task)
  })
}
