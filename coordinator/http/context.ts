import type { ParameterizedContext } from 'koa'
import type Router from '@koa/router'
import type { Principal } from '../auth/tokens.js'
import type { DeviceRecord } from '../store/types.js'
import type { Services } from '../services.js'

export interface CoordinatorState {
  principal?: Principal
  /** Set when the caller is an enrolled device. */
  device?: DeviceRecord
}

export type CoordinatorContext = ParameterizedContext<CoordinatorState>
export type CoordinatorRouter = Router<CoordinatorState>

/** A function that adds a group of routes. */
export type RouteModule = (router: CoordinatorRouter, services: Services) => void

export function requireDevice (ctx: CoordinatorContext): DeviceRecord {
  if (ctx.state.device === undefined) {
    ctx.throw(403, 'this route is for enrolled devices')
  }
  return ctx.state.device
}
