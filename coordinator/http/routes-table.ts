import type Router from '@koa/router'
import type { z } from 'zod'
import { requireRole, type Principal } from '../auth/tokens.js'
import { ForbiddenError, UnauthorizedError } from '../errors.js'
import { parseWith } from '../validation.js'
import { readJson } from './body.js'
import type { CoordinatorContext, CoordinatorState } from './context.js'
import type { DeviceRecord } from '../store/types.js'

/** Who may call a route. */
export type Access = 'public' | 'device' | 'viewer' | 'operator' | 'admin' | 'device-or-viewer'

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete'

export interface ResponseSpec {
  description: string
  schema?: z.ZodType
  contentType?: string
}

export interface RouteSpec<Body extends z.ZodType | undefined = undefined, Query extends z.ZodType | undefined = undefined> {
  method: Method
  /** Koa-router path, e.g. `/v1/tasks/:id`. */
  path: string
  summary: string
  tag: string
  access: Access
  /** JSON body, validated before the handler runs. */
  body?: Body
  /** Whether an absent body is read as `{}`. */
  bodyOptional?: boolean
  /** Bound on the JSON body. @default MAX_JSON_BODY_BYTES */
  maxBodyBytes?: number
  query?: Query
  /** A body that is not JSON (multipart, a stream): documented, read by the handler. */
  rawBody?: { contentType: string, description: string, schema?: z.ZodType }
  responses: Record<number, ResponseSpec>
  /** Operator changes are written to the audit log unless this says otherwise. */
  audited?: boolean
}

export interface RouteInput<Body, Query> {
  ctx: CoordinatorContext
  body: Body
  query: Query
  params: Record<string, string>
  principal: Principal | undefined
  /** The operator's name, for records of who did what. */
  actor: string
  device: DeviceRecord | undefined
}

type Infer<T> = T extends z.ZodType ? z.infer<T> : undefined

export type Handler<Body extends z.ZodType | undefined, Query extends z.ZodType | undefined> =
  (input: RouteInput<Infer<Body>, Infer<Query>>) => Promise<unknown> | unknown

/** Hooks run around every operator change (audit log). */
export type ChangeListener = (entry: { spec: RouteSpec<any, any>, ctx: CoordinatorContext, principal: Principal | undefined, status: number, body: unknown, params: Record<string, string> }) => void | Promise<void>

function bodyTimeouts (ctx: CoordinatorContext): { idleTimeoutMs?: number, totalTimeoutMs?: number } {
  const limits = ctx.state.limits
  return limits === undefined ? {} : { idleTimeoutMs: limits.bodyIdleTimeoutMs, totalTimeoutMs: limits.jsonBodyTimeoutMs }
}

function checkAccess (access: Access, ctx: CoordinatorContext): void {
  const principal = ctx.state.principal
  switch (access) {
    case 'public':
      return
    case 'device':
      if (principal === undefined) throw new UnauthorizedError()
      if (ctx.state.device === undefined) throw new ForbiddenError('this route is for enrolled devices')
      return
    case 'device-or-viewer':
      if (principal === undefined) throw new UnauthorizedError()
      if (ctx.state.device !== undefined) return
      requireRole(principal, 'viewer')
      return
    default:
      requireRole(principal, access)
  }
}

/**
 * The coordinator's routes, each declared with its access rule and the
 * schemas that validate its input. The same declarations produce the OpenAPI
 * document, so what is documented is what is enforced.
 */
export class RouteTable {
  readonly specs: Array<RouteSpec<any, any>> = []
  private readonly listeners: ChangeListener[] = []

  constructor (private readonly router: Router<CoordinatorState>) {}

  onChange (listener: ChangeListener): void {
    this.listeners.push(listener)
  }

  add<Body extends z.ZodType | undefined = undefined, Query extends z.ZodType | undefined = undefined> (spec: RouteSpec<Body, Query>, handler: Handler<Body, Query>): void {
    this.specs.push(spec)
    const isChange = spec.method !== 'get' && spec.access !== 'public' && spec.access !== 'device' && spec.audited !== false
    this.router[spec.method](spec.path, async (ctx: CoordinatorContext) => {
      checkAccess(spec.access, ctx)
      let body: unknown
      if (spec.body !== undefined) {
        const empty = spec.bodyOptional === true && (ctx.request.length === undefined || ctx.request.length === 0) && ctx.get('transfer-encoding') === ''
        body = parseWith(spec.body, empty ? {} : await readJson(ctx, { ...bodyTimeouts(ctx), ...(spec.maxBodyBytes !== undefined ? { maxBytes: spec.maxBodyBytes } : {}) }), 'body')
      }
      const query = spec.query !== undefined ? parseWith(spec.query, { ...ctx.query }, 'query') : undefined
      const principal = ctx.state.principal
      const actor = principal?.kind === 'operator' ? principal.name : principal?.kind === 'device' ? principal.deviceId : 'anonymous'
      const result = await handler({ ctx, body: body as Infer<Body>, query: query as Infer<Query>, params: ctx.params, principal, actor, device: ctx.state.device })
      if (result !== undefined) ctx.body = result
      if (isChange && ctx.status < 400) {
        for (const listener of this.listeners) await listener({ spec, ctx, principal, status: ctx.status, body, params: ctx.params })
      }
    })
  }
}
