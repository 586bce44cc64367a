import { z } from 'zod'
import { createTaskSchema, editTaskSchema, taskDevicesQuerySchema } from '../../tasks/service.js'
import type { RouteModule } from '../context.js'

const haltSchema = z.object({ reason: z.string().trim().min(1).max(500).optional() }).strict()

const listQuerySchema = z.object({ deleted: z.enum(['true', 'false']).optional() }).strict()

export const taskRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/tasks', tag: 'tasks', access: 'operator', body: createTaskSchema,
    summary: 'Create a task: install, uninstall or distribute a package to the devices its targets resolve to, now or at a time',
    responses: { 201: { description: 'the task, with how many devices its targets resolve to now (resolvedDevices)' }, 422: { description: 'security verification is on and the package is not signed' } }
  }, async ({ ctx, body, actor }) => {
    const { task, resolvedDevices } = await services.tasks.create(body, actor)
    // Release what may start now before answering, so that the answer shows it.
    await services.scheduler.tick()
    services.logger.info({ taskId: task.id, packageId: task.packageId, action: task.action, resolvedDevices, by: actor }, 'task created')
    ctx.status = 201
    ctx.set('Location', `/v1/tasks/${task.id}`)
    return { ...await services.tasks.view(task), resolvedDevices }
  })

  routes.add({
    method: 'get', path: '/v1/tasks', tag: 'tasks', access: 'viewer', query: listQuerySchema,
    summary: 'List tasks with their phase and progress; deleted ones with deleted=true',
    responses: { 200: { description: '{ tasks }' } }
  }, async ({ query }) => {
    const tasks = await services.tasks.list({ includeDeleted: query.deleted === 'true' })
    return { tasks: await Promise.all(tasks.map(async task => await services.tasks.view(task))) }
  })

  routes.add({
    method: 'get', path: '/v1/tasks/:id', tag: 'tasks', access: 'viewer',
    summary: 'A task: its settings, phase (scheduled, running, paused, expired, cancelled), released devices and progress',
    responses: { 200: { description: 'the task' }, 404: { description: 'no such task' } }
  }, async ({ params }) => await services.tasks.view(await services.tasks.get(params.id)))

  routes.add({
    method: 'patch', path: '/v1/tasks/:id', tag: 'tasks', access: 'operator', body: editTaskSchema,
    summary: 'Edit a task that has not started, is paused or has expired; the manifest revision grows and devices pick up the new one',
    responses: { 200: { description: 'the task' }, 404: { description: 'no such task' }, 409: { description: 'the task is running (pause it first) or was cancelled' } }
  }, async ({ params, body, actor }) => {
    const task = await services.tasks.edit(params.id, body)
    await services.scheduler.tick()
    services.logger.info({ taskId: task.id, revision: task.revision, fields: Object.keys(body), by: actor }, 'task edited')
    return await services.tasks.view(task)
  })

  routes.add({
    method: 'get', path: '/v1/tasks/:id/devices', tag: 'tasks', access: 'viewer', query: taskDevicesQuerySchema,
    summary: 'One row per device of a task, in device id order: state with its reason, bytes, attempt, exit code, message, release time, last contact; filter by state and site, page with limit (default 500, at most 5000) and cursor',
    responses: { 200: { description: '{ taskId, devices, nextCursor? }: follow nextCursor until it is absent (a filtered page may be short and still have one)' }, 400: { description: 'a bad filter, limit or cursor (invalid-cursor)' }, 404: { description: 'no such task' } }
  }, async ({ params, query }) => {
    const task = await services.tasks.get(params.id)
    return { taskId: task.id, ...await services.tasks.deviceRowsPage(task, query) }
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
    method: 'post', path: '/v1/tasks/:id/pause', tag: 'tasks', access: 'operator',
    summary: 'Pause a task: no more devices are released or start; devices already downloading or installing finish',
    responses: { 200: { description: 'the task' }, 404: { description: 'no such task' }, 409: { description: 'cancelled' } }
  }, async ({ params, actor }) => {
    const task = await services.tasks.pause(params.id)
    services.logger.info({ taskId: task.id, by: actor }, 'task paused')
    return await services.tasks.view(task)
  })

  routes.add({
    method: 'post', path: '/v1/tasks/:id/resume', tag: 'tasks', access: 'operator',
    summary: 'Resume a paused task',
    responses: { 200: { description: 'the task' }, 404: { description: 'no such task' }, 409: { description: 'cancelled' } }
  }, async ({ params, actor }) => {
    const task = await services.tasks.resume(params.id)
    await services.scheduler.tick()
    services.logger.info({ taskId: task.id, by: actor }, 'task resumed')
    return await services.tasks.view(task)
  })

  routes.add({
    method: 'post', path: '/v1/tasks/:id/phases/next', tag: 'tasks', access: 'operator',
    summary: 'Start the next ring of a phased rollout now, whatever the current ring\'s threshold and soak; a halted rollout goes on',
    responses: { 200: { description: 'the task with its rings' }, 404: { description: 'no such task' }, 409: { description: 'not phased (not-phased), at its last ring (last-phase), cancelled or deleted' } }
  }, async ({ params, actor }) => {
    const task = await services.tasks.promote(params.id, actor)
    await services.scheduler.tick()
    services.logger.info({ taskId: task.id, ring: task.rollout?.current, by: actor }, 'phased rollout promoted by hand')
    return await services.tasks.view(await services.tasks.get(task.id))
  })

  routes.add({
    method: 'post', path: '/v1/tasks/:id/halt', tag: 'tasks', access: 'operator', body: haltSchema, bodyOptional: true,
    summary: 'Halt a task (a phased rollout or any other): no more devices are released or start; those downloading or installing finish. Resume it, or start the next ring, to go on',
    responses: { 200: { description: 'the halted task' }, 404: { description: 'no such task' }, 409: { description: 'cancelled or deleted' } }
  }, async ({ params, body, actor }) => {
    const task = await services.tasks.halt(params.id, body.reason ?? `halted by ${actor}`, actor)
    services.logger.info({ taskId: task.id, by: actor }, 'task halted')
    return await services.tasks.view(task)
  })

  routes.add({
    method: 'post', path: '/v1/tasks/:id/cancel', tag: 'tasks', access: 'operator',
    summary: 'Cancel a task: no more devices start it; downloads stop; installs already running finish',
    responses: { 200: { description: 'the cancelled task' }, 404: { description: 'no such task' } }
  }, async ({ params, actor }) => {
    const task = await services.tasks.cancel(params.id, actor)
    services.logger.info({ taskId: task.id, by: actor }, 'task cancelled')
    return await services.tasks.view(task)
  })

  routes.add({
    method: 'post', path: '/v1/tasks/:id/rerun', tag: 'tasks', access: 'operator',
    summary: 'Re-run a task for its failed devices: their attempt counters start again and they try now',
    responses: { 200: { description: 'the task and how many failed devices run again' }, 404: { description: 'no such task' }, 409: { description: 'no failed device, cancelled or expired' } }
  }, async ({ params, actor }) => {
    const { task, devices } = await services.tasks.rerun(params.id)
    services.logger.info({ taskId: task.id, devices, by: actor }, 'task re-run for failed devices')
    return { ...await services.tasks.view(task), rerunDevices: devices }
  })

  routes.add({
    method: 'delete', path: '/v1/tasks/:id', tag: 'tasks', access: 'operator',
    summary: 'Delete a task (cannot be undone): it releases no more devices and leaves the lists; devices already downloading or installing finish',
    responses: { 200: { description: 'the deleted task and how many devices are finishing' }, 404: { description: 'no such task' } }
  }, async ({ params, actor }) => {
    const { task, finishing } = await services.tasks.delete(params.id, actor)
    services.logger.info({ taskId: task.id, finishing, by: actor }, 'task deleted')
    return {
      deleted: task.id,
      finishingDevices: finishing,
      message: finishing === 0 ? 'deleted; no device was working on it' : `deleted; ${finishing} device(s) already downloading or installing will finish`
    }
  })
}
