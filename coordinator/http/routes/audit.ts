import { auditQuerySchema } from '../../audit/log.js'
import type { RouteModule } from '../context.js'

export const auditRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'get', path: '/v1/audit', tag: 'audit', access: 'admin', query: auditQuerySchema,
    summary: 'The audit log of operator changes, newest first: who, what, when, from where; filter by actor and time, page with cursor',
    responses: { 200: { description: '{ entries, nextCursor? }' } }
  }, async ({ query }) => await services.audit.list(query))
}
