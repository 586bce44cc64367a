import Koa from 'koa'
import Router from '@koa/router'
import type { Services } from '../services.js'
import { authMiddleware } from './auth.js'
import { consoleMiddleware, findConsoleFolder, loadConsoleFiles } from './console.js'
import type { CoordinatorState } from './context.js'
import { problemMiddleware } from './problem.js'
import { RouteTable } from './routes-table.js'
import { agentRoutes } from './routes/agents.js'
import { deviceRoutes } from './routes/devices.js'
import { eventRoutes } from './routes/events.js'
import { meRoutes } from './routes/me.js'
import { healthRoutes } from './routes/health.js'
import { openApiRoutes } from './routes/openapi.js'
import { packageRoutes } from './routes/packages.js'
import { taskRoutes } from './routes/tasks.js'
import { tokenRoutes } from './routes/tokens.js'

export const ROUTE_MODULES = [healthRoutes, openApiRoutes, agentRoutes, packageRoutes, taskRoutes, deviceRoutes, tokenRoutes, eventRoutes, meRoutes]

/** The Koa application with the table of its routes (for the OpenAPI document). */
export type CoordinatorApp = Koa<CoordinatorState> & { routes: RouteTable }

/** The coordinator's Koa application; tests drive it through `app.callback()`. */
export function createApp (services: Services): CoordinatorApp {
  const app = new Koa<CoordinatorState>() as CoordinatorApp
  app.proxy = false
  app.silent = true
  const router = new Router<CoordinatorState>()
  const routes = new RouteTable(router)
  app.routes = routes
  for (const module of ROUTE_MODULES) module(routes, services)
  app.use(problemMiddleware(services.logger))
  app.use(async (ctx, next) => {
    ctx.set('X-Content-Type-Options', 'nosniff')
    ctx.set('Cache-Control', 'no-store')
    await next()
  })
  app.use(consoleMiddleware(loadConsoleFiles(findConsoleFolder())))
  app.use(authMiddleware(services))
  app.use(router.routes())
  app.use(router.allowedMethods({ throw: true }))
  return app
}
