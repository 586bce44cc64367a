import type { Next } from 'koa'
import { UnauthorizedError } from '../errors.js'
import type { Services } from '../services.js'
import type { CoordinatorContext } from './context.js'
import { SESSION_HEADER } from '../devices/credential-sessions.js'

const BEARER = /^Bearer ([A-Za-z0-9_\-.~+/]+=*)$/
/** An agent's session id as it sends it; anything else counts as no session. */
const SESSION_ID = /^[A-Za-z0-9_-]{8,64}$/

/** Paths that answer without credentials. */
const PUBLIC_PATHS = new Set(['/v1/health', '/v1/agents/enroll'])

/** Whether a path answers without credentials (everything outside /v1 and /metrics is a 404 for anyone). */
export function isPublicPath (path: string): boolean {
  return !(path.startsWith('/v1/') || path === '/metrics') || PUBLIC_PATHS.has(path)
}

/**
 * Resolves the bearer token to an operator or a device. Everything under
 * /v1 but health and enroll needs one.
 */
export function authMiddleware (services: Services) {
  return async function authenticate (ctx: CoordinatorContext, next: Next): Promise<void> {
    if (isPublicPath(ctx.path)) {
      await next()
      return
    }
    const header = ctx.get('authorization')
    const match = BEARER.exec(header)
    if (match === null) throw new UnauthorizedError(header === '' ? 'a bearer token is required' : 'the Authorization header must be "Bearer <token>"')
    const secret = match[1]
    const operator = await services.tokens.authenticateOperator(secret)
    if (operator !== undefined) {
      ctx.state.principal = operator
    } else {
      const device = await services.devices.authenticate(secret)
      if (device === undefined) throw new UnauthorizedError('the token is not valid')
      ctx.state.principal = { kind: 'device', deviceId: device.id }
      ctx.state.device = device
      await services.devices.touch(device, ctx.ip)
      const session = ctx.get(SESSION_HEADER)
      const shared = await services.devices.noteSession(device, { ...(SESSION_ID.test(session) ? { session } : {}), address: ctx.ip })
      if (shared !== undefined) services.logger.warn({ deviceId: device.id, sessions: shared.sessions, addresses: shared.addresses, evidence: shared.evidence }, 'a device credential is used by two agents at once (a copied agent.json?)')
    }
    await next()
  }
}
