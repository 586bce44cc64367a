import { setTimeout as sleep } from 'node:timers/promises'
import type { SseMessage } from '../events/sse.js'
import { ApiRequestError, type ApiClient } from './api-client.js'

/** The coordinator sends a heartbeat every 15 s; this long without a byte means the stream is dead. @default 45 s */
export const DEFAULT_EVENT_IDLE_TIMEOUT_MS = 45_000
const FIRST_RECONNECT_DELAY_MS = 1_000
const MAX_RECONNECT_DELAY_MS = 15_000

/** Waits between reconnections: doubling from one second, at most fifteen. */
export function reconnectDelayMs (failures: number): number {
  return Math.min(MAX_RECONNECT_DELAY_MS, FIRST_RECONNECT_DELAY_MS * 2 ** Math.max(0, failures - 1))
}

export type FollowState = 'live' | 'reconnecting' | 'unavailable'

export interface FollowEventsOptions {
  signal: AbortSignal
  onMessage: (message: SseMessage) => void
  /** `live` once the coordinator has replayed what was missed; `reconnecting` while the stream is down; `unavailable` when the coordinator refuses it for good. */
  onState: (state: FollowState) => void
  /** @default DEFAULT_EVENT_IDLE_TIMEOUT_MS */
  idleTimeoutMs?: number
}

/**
 * Follows an event stream for as long as `signal` allows: reconnects with
 * Last-Event-ID after a cut, treats silence longer than the heartbeat as a
 * cut, and gives up only when the coordinator refuses it for good (an older
 * coordinator without /v1/events, a revoked token).
 */
export async function followEvents (client: ApiClient, path: string, options: FollowEventsOptions): Promise<void> {
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_EVENT_IDLE_TIMEOUT_MS
  let lastEventId: string | undefined
  let failures = 0
  while (!options.signal.aborted) {
    const attempt = new AbortController()
    const stop = (): void => { attempt.abort() }
    options.signal.addEventListener('abort', stop, { once: true })
    let idle: NodeJS.Timeout | undefined
    const alive = (): void => {
      clearTimeout(idle)
      idle = setTimeout(() => { attempt.abort() }, idleTimeoutMs)
    }
    try {
      alive()
      await client.streamEvents(path, {
        signal: attempt.signal,
        ...(lastEventId !== undefined ? { lastEventId } : {}),
        onOpen: alive,
        onComment: alive,
        onMessage: message => {
          alive()
          if (message.id !== undefined) lastEventId = message.id
          if (message.event === 'ready' || message.event === 'reset') {
            failures = 0
            options.onState('live')
          }
          options.onMessage(message)
        }
      })
    } catch (error) {
      // Refusals that another attempt cannot change; 429 and 5xx are tried again.
      if (error instanceof ApiRequestError && error.status < 500 && error.status !== 429) {
        options.onState('unavailable')
        return
      }
    } finally {
      clearTimeout(idle)
      options.signal.removeEventListener('abort', stop)
    }
    if (options.signal.aborted) return
    options.onState('reconnecting')
    failures++
    await sleep(reconnectDelayMs(failures), undefined, { signal: options.signal }).catch(() => {})
  }
}
