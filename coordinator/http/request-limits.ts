import type { Next } from 'koa'
import { RateLimitedError, UnauthorizedError } from '../errors.js'
import type { CoordinatorContext } from './context.js'
import { RateLimiter, type RateDecision, type RateLimitRule } from '../../protocol/rate-limiter.js'

export interface HttpLimitsInit {
  /** Per operator token. @default 50/s, burst 200 */
  operatorRate?: RateLimitRule
  /**
   * Per device. Chunk fetches from the origin count, so it is high; it stops
   * a runaway or hostile agent, not a busy one. @default 1000/s, burst 2000
   */
  deviceRate?: RateLimitRule
  /** Per client address, for unauthenticated routes and failed authentications. @default 10/s, burst 50 */
  anonymousRate?: RateLimitRule
  /** A client must send its request headers within this time. @default 20000 */
  headersTimeoutMs?: number
  /** A request body may pause this long between two pieces. @default 30000 */
  bodyIdleTimeoutMs?: number
  /** A JSON body (at most 1 MiB) must arrive whole within this time. @default 60000 */
  jsonBodyTimeoutMs?: number
  now?: () => number
}

export const DEFAULT_OPERATOR_RATE: RateLimitRule = { requestsPerSecond: 50, burst: 200 }
export const DEFAULT_DEVICE_RATE: RateLimitRule = { requestsPerSecond: 1000, burst: 2000 }
export const DEFAULT_ANONYMOUS_RATE: RateLimitRule = { requestsPerSecond: 10, burst: 50 }
export const DEFAULT_HEADERS_TIMEOUT_MS = 20_000
export const DEFAULT_BODY_IDLE_TIMEOUT_MS = 30_000
export const DEFAULT_JSON_BODY_TIMEOUT_MS = 60_000

/** Resolved limits of the HTTP layer. */
export interface HttpLimits {
  operators: RateLimiter
  devices: RateLimiter
  anonymous: RateLimiter
  headersTimeoutMs: number
  bodyIdleTimeoutMs: number
  jsonBodyTimeoutMs: number
}

export function resolveHttpLimits (init: HttpLimitsInit = {}): HttpLimits {
  const clock = init.now !== undefined ? { now: init.now } : {}
  return {
    operators: new RateLimiter({ ...(init.operatorRate ?? DEFAULT_OPERATOR_RATE), ...clock }),
    devices: new RateLimiter({ ...(init.deviceRate ?? DEFAULT_DEVICE_RATE), ...clock }),
    anonymous: new RateLimiter({ ...(init.anonymousRate ?? DEFAULT_ANONYMOUS_RATE), ...clock }),
    headersTimeoutMs: init.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS,
    bodyIdleTimeoutMs: init.bodyIdleTimeoutMs ?? DEFAULT_BODY_IDLE_TIMEOUT_MS,
    jsonBodyTimeoutMs: init.jsonBodyTimeoutMs ?? DEFAULT_JSON_BODY_TIMEOUT_MS
  }
}

function enforce (decision: RateDecision, who: string): void {
  if (decision.allowed) return
  throw new RateLimitedError(`too many requests from ${who}; try again in ${Math.ceil(decision.retryAfterMs / 1000)} s`, decision.retryAfterMs)
}

/**
 * Runs around authentication. Unauthenticated routes count against the
 * client's address, and so does every failed authentication; past the
 * budget a failure is answered 429 instead of 401. A valid credential is
 * never held back by its address: the devices of a site behind one NAT
 * address must not be locked out by a neighbour guessing tokens.
 */
export function anonymousRateMiddleware (limits: HttpLimits, isPublic: (path: string) => boolean) {
  return async function limitAnonymous (ctx: CoordinatorContext, next: Next): Promise<void> {
    const address = ctx.ip
    if (isPublic(ctx.path)) enforce(limits.anonymous.take(address), 'this address')
    try {
      await next()
    } catch (error) {
      if (error instanceof UnauthorizedError) enforce(limits.anonymous.take(address), 'this address (too many failed authentications)')
      throw error
    }
  }
}

/** Runs after authentication: each operator token and each device has its own budget. */
export function principalRateMiddleware (limits: HttpLimits) {
  return async function limitPrincipal (ctx: CoordinatorContext, next: Next): Promise<void> {
    const principal = ctx.state.principal
    if (principal?.kind === 'operator') enforce(limits.operators.take(principal.tokenId), `token ${principal.name}`)
    else if (principal?.kind === 'device') enforce(limits.devices.take(principal.deviceId), `device ${principal.deviceId}`)
    await next()
  }
}
