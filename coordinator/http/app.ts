import Koa from 'koa'
import Router from '@koa/router'
import type { Services } from '../services.js'
import { authMiddleware, isPublicPath } from './auth.js'
import { auditListener } from './audit-listener.js'
import { consoleMiddleware, findConsoleFolder, loadConsoleFiles } from './console.js'
import { anonymousRateMiddleware, principalRateMiddleware, resolveHttpLimits, type HttpLimits, type HttpLimitsInit } from './request-limits.js'
import type { CoordinatorState } from './context.js'
import { problemMiddleware } from './problem.js'
import { ApiError } from '../errors.js'
import { RouteTable } from './routes-table.js'
import { agentRoutes } from './routes/agents.js'
import { deviceRoutes } from './routes/devices.js'
import { eventRoutes } from './routes/events.js'
import { meRoutes } from './routes/me.js'
import { healthRoutes } from './routes/health.js'
import { openApiRoutes } from './routes/openapi.js'
import { packageRoutes } from './routes/packages.js'
import { siteRoutes } from './routes/sites.js'
import { taskRoutes } from './routes/tasks.js'
import { tokenRoutes } from './routes/tokens.js'
import { operatorTokenRoutes } from './routes/operator-tokens.js'
import { auditRoutes } from './routes/audit.js'
import { keyRoutes } from './routes/keys.js'
import { directoryRoutes } from './routes/directory.js'
import { publisherRoutes } from './routes/publishers.js'
import { settingsRoutes } from './routes/settings.js'
import { requestRoutes } from './routes/requests.js'
import { credentialRoutes } from './routes/credentials.js'
import { pushInstallRoutes } from './routes/push-installs.js'
import { windowRoutes } from './routes/windows.js'

export const ROUTE_MODULES = [
  healthRoutes, openApiRoutes, agentRoutes, packageRoutes, taskRoutes, deviceRoutes, siteRoutes, tokenRoutes,
  operatorTokenRoutes, auditRoutes, keyRoutes, directoryRoutes, publisherRoutes, settingsRoutes, requestRoutes,
  eventRoutes, meRoutes, credentialRoutes, pushInstallRoutes, windowRoutes
]

/** The Koa application with the table of its routes (for the OpenAPI document). */
export type CoordinatorApp = Koa<CoordinatorState> & { routes: RouteTable, limits: HttpLimits }

export interface AppInit {
  /** Rate limits and body timeouts; defaults in request-limits.ts. */
  limits?: HttpLimitsInit
}

/** The coordinator's Koa application; tests drive it through `app.callback()`. */
export function createApp (services: Services, init: AppInit = {}): CoordinatorApp {
  const app = new Koa<CoordinatorState>() as CoordinatorApp
  app.proxy = false
  app.silent = true
  const router = new Router<CoordinatorState>()
  const routes = new RouteTable(router)
  app.routes = routes
  app.limits = resolveHttpLimits(init.limits)
  for (const module of ROUTE_MODULES) module(routes, services)
  routes.onChange(auditListener(services.audit))
  app.use(problemMiddleware(services.logger))
  app.use(async (ctx, next) => {
    ctx.set('X-Content-Type-Options', 'nosniff')
    ctx.set('Cache-Control', 'no-store')
    ctx.state.limits = app.limits
    await next()
  })
  // The console's files are static, public and served from memory: they come before the limits on anonymous callers.
  app.use(consoleMiddleware(loadConsoleFiles(findConsoleFolder())))
  app.use(anonymousRateMiddleware(app.limits, isPublicPath))
  app.use(authMiddleware(services))
  app.use(principalRateMiddleware(app.limits))
  app.use(methodNotAllowedMiddleware())
  app.use(router.routes())
  app.use(router.allowedMethods())
  return app
}

/**
 * A method a route does not take — one of the others, or one the API never
 * uses (TRACE, PROPFIND) — is answered 405 with the methods it does take.
 */
function methodNotAllowedMiddleware () {
  return async function methodNotAllowed (ctx: Koa.Context, next: Koa.Next): Promise<void> {
    await next()
    if ((ctx.status !== 405 && ctx.status !== 501) || (ctx.body !== undefined && ctx.body !== null && ctx.body !== '')) return
    const allow = ctx.response.get('Allow')
    throw new ApiError(405, 'method-not-allowed', `${ctx.method.slice(0, 20)} is not allowed on ${ctx.path}${allow !== '' ? `; allowed: ${allow}` : ''}`, { headers: { allow } })
  }
}
