import { z } from 'zod'
import { requireRole } from '../../auth/tokens.js'
import type { RouteModule } from '../context.js'

export const meSchema = z.object({
  kind: z.literal('operator'),
  tokenId: z.string(),
  name: z.string(),
  role: z.enum(['viewer', 'operator', 'admin'])
})

export const meRoutes: RouteModule = routes => {
  routes.add({
    method: 'get', path: '/v1/me', tag: 'system', access: 'viewer',
    summary: 'The operator token making the request: its name and role (what a client may offer its user)',
    responses: { 200: { description: 'the token\'s id, name and role', schema: meSchema } }
  }, ({ principal }) => {
    const operator = requireRole(principal, 'viewer')
    return { kind: 'operator', tokenId: operator.tokenId, name: operator.name, role: operator.role }
  })
}
