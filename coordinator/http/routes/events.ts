import { once } from 'node:events'
import type { ServerResponse } from 'node:http'
import { z } from 'zod'
import { requireRole } from '../../auth/tokens.js'
import { EventSession, type EventSink } from '../../events/session.js'
import { ApiError, ValidationError } from '../../errors.js'
import type { RouteModule } from '../context.js'

const eventsQuerySchema = z.object({
  taskId: z.string().min(1).max(100).optional(),
  /** For clients that cannot set the Last-Event-ID header; the header wins. */
  lastEventId: z.string().max(20).optional()
}).strict()

/** Streams open at once; more are refused (each holds a socket and a listener). */
export const MAX_EVENT_CLIENTS = 1000
/** Streams one operator token may hold open at once: a console tab or a CLI each hold one; a leaked or hostile token cannot take them all. */
export const MAX_EVENT_STREAMS_PER_TOKEN = 8

function responseSink (response: ServerResponse): EventSink {
  return {
    write: text => response.write(text),
    get bufferedBytes () { return response.writableLength },
    waitForDrain: async signal => { await once(response, 'drain', { signal }) },
    close: () => { if (!response.writableEnded) response.end() }
  }
}

function parseEventId (value: string): number {
  if (!/^\d{1,16}$/.test(value)) throw new ValidationError('Last-Event-ID must be an event id from this stream', [{ path: 'lastEventId', message: 'not an event id' }])
  return Number(value)
}

export const eventRoutes: RouteModule = (routes, services) => {
  let clients = 0
  const perToken = new Map<string, number>()
  routes.add({
    method: 'get', path: '/v1/events', tag: 'events', access: 'viewer', query: eventsQuerySchema,
    summary: 'Live events for operators (server-sent events): device status changes, task and device changes; resume with Last-Event-ID',
    responses: {
      200: {
        description: 'text/event-stream. Events `status`, `task`, `device`, each with an `id:` that only grows; `ready` once caught up; `reset` when the events after Last-Event-ID are no longer kept (fetch the state again); comment heartbeats.',
        contentType: 'text/event-stream'
      },
      404: { description: 'no such task' },
      429: { description: `this token holds ${MAX_EVENT_STREAMS_PER_TOKEN} event streams open already; close one` },
      503: { description: 'too many event streams are open; try again later' }
    }
  }, async ({ ctx, query, principal }) => {
    if (query.taskId !== undefined) await services.tasks.get(query.taskId)
    if (clients >= MAX_EVENT_CLIENTS) throw new ApiError(503, 'too-many-event-clients', `${MAX_EVENT_CLIENTS} event streams are open already`, { headers: { 'retry-after': '30' } })
    const tokenId = principal?.kind === 'operator' ? principal.tokenId : 'unknown'
    const held = perToken.get(tokenId) ?? 0
    if (held >= MAX_EVENT_STREAMS_PER_TOKEN) {
      throw new ApiError(429, 'too-many-event-streams', `this token holds ${MAX_EVENT_STREAMS_PER_TOKEN} event streams open already; close one first`, { headers: { 'retry-after': '30' } })
    }
    const header = ctx.get('last-event-id')
    const resumeFrom = header !== '' ? header : query.lastEventId
    const lastEventId = resumeFrom !== undefined && resumeFrom !== '' ? parseEventId(resumeFrom) : undefined
    const secret = ctx.get('authorization').replace(/^Bearer /, '')
    const stillAuthorized = async (): Promise<boolean> => {
      const principal = await services.tokens.authenticateOperator(secret)
      requireRole(principal, 'viewer')
      return true
    }
    const response = ctx.res
    const closed = new AbortController()
    response.on('close', () => { closed.abort() })
    // Answered here, as a stream; Koa leaves the response alone.
    ctx.status = 200
    ctx.respond = false
    ctx.req.socket.setNoDelay(true)
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no'
    })
    const session = new EventSession({
      journal: services.events,
      sink: responseSink(response),
      ...(query.taskId !== undefined ? { taskId: query.taskId } : {}),
      ...(lastEventId !== undefined ? { lastEventId } : {}),
      stillAuthorized
    })
    clients++
    perToken.set(tokenId, held + 1)
    services.metrics.eventClients.inc()
    try {
      const end = await session.run(closed.signal)
      services.metrics.eventClientsDisconnected.inc({ reason: end })
      if (end === 'slow-client') {
        services.logger.warn({ taskId: query.taskId, unsentBytes: response.writableLength }, 'disconnected an event client that read too slowly')
        response.destroy()
      }
    } finally {
      clients--
      const left = (perToken.get(tokenId) ?? 1) - 1
      if (left > 0) perToken.set(tokenId, left)
      else perToken.delete(tokenId)
      services.metrics.eventClients.dec()
    }
  })
}
