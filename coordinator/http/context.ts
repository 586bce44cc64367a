import type { ParameterizedContext } from 'koa'
import type { Principal } from '../auth/tokens.js'
import type { DeviceRecord } from '../store/types.js'
import type { Services } from '../services.js'
import type { RouteTable } from './routes-table.js'
import type { HttpLimits } from './request-limits.js'

export interface CoordinatorState {
  principal?: Principal
  /** Set when the caller is an enrolled device. */
  device?: DeviceRecord
  /** Rate limits and body timeouts of the HTTP layer. */
  limits?: HttpLimits
}

export type CoordinatorContext = ParameterizedContext<CoordinatorState>

/** A function that adds a group of routes. */
export type RouteModule = (routes: RouteTable, services: Services) => void
