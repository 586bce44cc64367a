import { MIB } from '../../../protocol/index.js'
import { importUsersSchema } from '../../directory/service.js'
import type { RouteModule } from '../context.js'

export const directoryRoutes: RouteModule = (routes, services) => {
  routes.add({
    // A whole organisation's directory in one request, so that replace=true sees everyone at once.
    method: 'post', path: '/v1/users/import', tag: 'directory', access: 'operator', body: importUsersSchema, maxBodyBytes: 32 * MIB,
    summary: 'Import people (id, displayName, email, department, role, devices by id or host name); replace=true removes those not listed',
    responses: { 200: { description: 'created, updated, unchanged, removed, total' } }
  }, async ({ body, actor }) => {
    const result = await services.directory.import(body)
    services.logger.info({ ...result, by: actor }, 'users imported')
    return result
  })

  routes.add({
    method: 'get', path: '/v1/users', tag: 'directory', access: 'viewer',
    summary: 'The people who use devices, with department, role and devices',
    responses: { 200: { description: '{ users }' } }
  }, () => ({ users: services.directory.list() }))

  routes.add({
    method: 'get', path: '/v1/users/:id', tag: 'directory', access: 'viewer',
    summary: 'A person',
    responses: { 200: { description: 'the user' }, 404: { description: 'no such user' } }
  }, ({ params }) => services.directory.get(params.id))

  routes.add({
    method: 'delete', path: '/v1/users/:id', tag: 'directory', access: 'operator',
    summary: 'Remove a person from the directory',
    responses: { 200: { description: 'the removed user' }, 404: { description: 'no such user' } }
  }, async ({ params }) => await services.directory.remove(params.id))
}
