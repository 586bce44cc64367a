import type { RouteModule } from '../context.js'

export const VERSION = '0.1.0'

export const healthRoutes: RouteModule = (router, services) => {
  router.get('/v1/health', ctx => {
    ctx.body = {
      status: 'ok',
      version: VERSION,
      uptimeSeconds: Math.round((Date.now() - services.startedAt) / 1000),
      coordinatorKeyId: services.key.keyId
    }
  })
}
