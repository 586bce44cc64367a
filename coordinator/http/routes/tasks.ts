import { createTaskSchema } from '../../tasks/service.js'
import type { RouteModule } from '../context.js'

export const taskRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/tasks', tag: 'tasks', access: 'operator', body: createTaskSchema,
    summary: 'Create a task: deploy a package to the devices its targets resolve to',
    responses: { 201: { description: 'the task, with how many devices its targets resolve to now' } }
  }, async ({ ctx, body, actor }) => {
    const { task, resolvedDevices } = await services.tasks.create(body, actor)
    services.logger.info({ taskId: task.id, packageId: task.packageId, resolvedDevices, by: actor }, 'task created')
    ctx.status = 201
    ctx.set('Location', `/v1/tasks/${task.id}`)
    return { ...await services.tasks.view(task), resolvedDevices }
  })

  routes.add({
    method: 'get', path: '/v1/tasks', tag: 'tasks', access: 'viewer',
    summary: 'List tasks with their progress',
    responses: { 200: { description: '{ tasks }' } }
  }, async () => {
    const tasks = await services.tasks.list()
    return { tasks: await Promise.all(tasks.map(async task => await services.tasks.view(task))) }
  })

  routes.add({
    method: 'get', path: '/v1/tasks/:id', tag: 'tasks', access: 'viewer',
    summary: 'A task and its progress: counts by state, percent, bytes from peers and from the origin',
    responses: { 200: { description: 'the task' }, 404: { description: 'no such task' } }
  }, async ({ params }) => await services.tasks.view(await services.tasks.get(params.id)))

  routes.add({
    method: 'get', path: '/v1/tasks/:id/devices', tag: 'tasks', access: 'viewer',
    summary: 'One row per device of a task: state, bytes, attempt, exit code, message, last contact',
    responses: { 200: { description: '{ taskId, devices }' }, 404: { description: 'no such task' } }
  }, async ({ params }) => {
    const task = await services.tasks.get(params.id)
    return { taskId: task.id, devices: await services.tasks.deviceRows(task) }
  })

  routes.add({
    method: 'get', path: '/v1/tasks/:id/devices/:deviceId/history', tag: 'tasks', access: 'viewer',
    summary: 'Every status record a device reported for a task, oldest first',
    responses: { 200: { description: '{ taskId, deviceId, records }' }, 404: { description: 'no such task' } }
  }, async ({ params }) => {
    const task = await services.tasks.get(params.id)
    return { taskId: task.id, deviceId: params.deviceId, records: await services.statuses.history(task.id, params.deviceId) }
  })

  routes.add({
    method: 'post', path: '/v1/tasks/:id/cancel', tag: 'tasks', access: 'operator',
    summary: 'Cancel a task: no more devices start it; installs already running finish',
    responses: { 200: { description: 'the cancelled task' }, 404: { description: 'no such task' } }
  }, async ({ params, actor }) => {
    const task = await services.tasks.cancel(params.id)
    services.logger.info({ taskId: task.id, by: actor }, 'task cancelled')
    return await services.tasks.view(task)
  })
}
