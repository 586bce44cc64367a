import type { OperatorEvent } from '../store/types.js'
import type { EventJournal } from './journal.js'
import { formatSseComment, formatSseMessage } from './sse.js'

/** A heartbeat comment this often keeps proxies and idle timers from closing the stream. @default 15 s */
export const DEFAULT_HEARTBEAT_MS = 15_000
/** A client with more unsent bytes than this is disconnected (it may resume). @default 1 MiB */
export const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024
/** Live events held while the backlog is replayed; more and the client is disconnected. @default 5,000 */
export const DEFAULT_MAX_QUEUED_EVENTS = 5_000
/** Events replayed per store read. */
export const REPLAY_PAGE_EVENTS = 500
/** How long clients wait before reconnecting (the `retry:` field). */
export const RECONNECT_DELAY_MS = 2_000

/** Where a session writes: an HTTP response in production, a buffer in tests. */
export interface EventSink {
  /** false when the sink wants the writer to wait for `waitForDrain`. */
  write (text: string): boolean
  /** Bytes written but not yet sent. */
  readonly bufferedBytes: number
  waitForDrain (signal: AbortSignal): Promise<void>
  close (): void
}

/** A timer the session can be given; tests drive it by hand. */
export interface IntervalTimer {
  setInterval (callback: () => void, ms: number): unknown
  clearInterval (handle: unknown): void
}

export interface EventSessionInit {
  journal: EventJournal
  sink: EventSink
  /** Only events of this task. */
  taskId?: string
  /** Resume after this id; absent: only new events. */
  lastEventId?: number
  /** @default DEFAULT_HEARTBEAT_MS */
  heartbeatMs?: number
  /** @default DEFAULT_MAX_BUFFERED_BYTES */
  maxBufferedBytes?: number
  /** @default DEFAULT_MAX_QUEUED_EVENTS */
  maxQueuedEvents?: number
  /** @default the global timers */
  timer?: IntervalTimer
  /** Asked at every heartbeat: a stream ends when its token is revoked. */
  stillAuthorized?: () => Promise<boolean>
}

/** Why a session ended: its connection closed (`signal`), the client read too slowly, or its token no longer holds. */
export type SessionEnd = 'closed' | 'slow-client' | 'unauthorized'

/**
 * One client's event stream: the events it missed (or a reset when they are
 * no longer kept), a `ready` marker, then live events as the journal stores
 * them, with heartbeats in between. Memory per client is bounded: a client
 * that does not read is disconnected and may resume from its last id.
 */
export class EventSession {
  private readonly init: EventSessionInit
  private readonly heartbeatMs: number
  private readonly maxBufferedBytes: number
  private readonly maxQueuedEvents: number
  private readonly timer: IntervalTimer
  private readonly ended = new AbortController()
  private endReason: SessionEnd = 'closed'
  private queue: OperatorEvent[] | undefined = []
  /** Events up to this id were replayed from the store. */
  private replayedUntil = 0

  constructor (init: EventSessionInit) {
    this.init = init
    this.heartbeatMs = init.heartbeatMs ?? DEFAULT_HEARTBEAT_MS
    this.maxBufferedBytes = init.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES
    this.maxQueuedEvents = init.maxQueuedEvents ?? DEFAULT_MAX_QUEUED_EVENTS
    this.timer = init.timer ?? { setInterval: (callback, ms) => setInterval(callback, ms), clearInterval: handle => { clearInterval(handle as NodeJS.Timeout) } }
  }

  /** Streams until `signal` aborts (the connection closed) or the client is too slow. */
  async run (signal: AbortSignal): Promise<SessionEnd> {
    const { journal, sink } = this.init
    const onAppended = (events: OperatorEvent[]): void => { this.deliver(events) }
    const onAbort = (): void => { this.end('closed') }
    signal.addEventListener('abort', onAbort, { once: true })
    journal.on('appended', onAppended)
    const heartbeat = this.timer.setInterval(() => { void this.heartbeat() }, this.heartbeatMs)
    try {
      if (signal.aborted) return 'closed'
      this.send(`retry: ${RECONNECT_DELAY_MS}\n` + formatSseComment('meshdeploy events'))
      await this.replay()
      const queued = this.queue ?? []
      this.queue = undefined
      this.deliver(queued)
      if (!this.ended.signal.aborted) {
        await new Promise<void>(resolve => { this.ended.signal.addEventListener('abort', () => { resolve() }, { once: true }) })
      }
      return this.endReason
    } finally {
      signal.removeEventListener('abort', onAbort)
      journal.off('appended', onAppended)
      this.timer.clearInterval(heartbeat)
      sink.close()
    }
  }

  private end (reason: SessionEnd): void {
    if (this.ended.signal.aborted) return
    this.endReason = reason
    this.ended.abort()
  }

  private async heartbeat (): Promise<void> {
    if (this.init.stillAuthorized !== undefined && !await this.init.stillAuthorized().catch(() => false)) {
      this.end('unauthorized')
      return
    }
    this.send(formatSseComment(`heartbeat ${new Date().toISOString()}`))
  }

  private async replay (): Promise<void> {
    const { journal } = this.init
    // Everything up to here is in the store; later events arrive through the queue.
    const until = journal.lastId
    this.replayedUntil = until
    let after = this.init.lastEventId
    if (after === undefined) {
      this.sendControl('ready', until, { lastEventId: until, oldestEventId: journal.oldestRetainedId })
      return
    }
    while (!this.ended.signal.aborted) {
      const resumption = await journal.resume(after, until, REPLAY_PAGE_EVENTS)
      if (resumption.kind === 'reset') {
        this.sendControl('reset', until, { reason: resumption.reason, lastEventId: until, oldestEventId: journal.oldestRetainedId })
        return
      }
      for (const event of resumption.events) this.sendEvent(event)
      if (resumption.events.length > 0) after = resumption.events[resumption.events.length - 1].id
      if (resumption.complete) break
      if (this.init.sink.bufferedBytes > 0) await this.init.sink.waitForDrain(this.ended.signal).catch(() => {})
    }
    this.sendControl('ready', until, { lastEventId: until, oldestEventId: journal.oldestRetainedId })
  }

  private deliver (events: OperatorEvent[]): void {
    if (this.queue !== undefined) {
      this.queue.push(...events.filter(event => event.id > this.replayedUntil && this.wanted(event)))
      if (this.queue.length > this.maxQueuedEvents) this.end('slow-client')
      return
    }
    for (const event of events) {
      if (event.id > this.replayedUntil) this.sendEvent(event)
    }
  }

  private wanted (event: OperatorEvent): boolean {
    return this.init.taskId === undefined || event.taskId === this.init.taskId
  }

  private sendEvent (event: OperatorEvent): void {
    if (!this.wanted(event)) return
    this.send(formatSseMessage({ id: event.id, event: event.type, data: JSON.stringify({ id: event.id, type: event.type, at: event.at, ...(event.taskId !== undefined ? { taskId: event.taskId } : {}), data: event.data }) }))
  }

  /** Markers carry the id the client is caught up to, so that resuming from them is exact. */
  private sendControl (event: 'ready' | 'reset', id: number, data: Record<string, unknown>): void {
    this.send(formatSseMessage({ id, event, data: JSON.stringify(data) }))
  }

  private send (text: string): void {
    if (this.ended.signal.aborted) return
    this.init.sink.write(text)
    if (this.init.sink.bufferedBytes > this.maxBufferedBytes) this.end('slow-client')
  }
}
