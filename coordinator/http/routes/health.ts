import { z } from 'zod'
import type { RouteModule } from '../context.js'

export const VERSION = '0.1.0'

export const healthSchema = z.object({
  status: z.literal('ok'),
  version: z.string(),
  uptimeSeconds: z.number(),
  coordinatorKeyId: z.string()
})

export const healthRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'get', path: '/v1/health', tag: 'system', access: 'public',
    summary: 'Liveness of the coordinator',
    responses: { 200: { description: 'the coordinator is up', schema: healthSchema } }
  }, () => ({
    status: 'ok',
    version: VERSION,
    uptimeSeconds: Math.round((Date.now() - services.startedAt) / 1000),
    coordinatorKeyId: services.key.keyId
  }))
}
