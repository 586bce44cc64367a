import { EventEmitter } from 'node:events'
import type { OperatorEvent, OperatorEventType, Store, WriteOperation } from '../store/types.js'

/** Events kept for clients that resume. @default 10,000 */
export const DEFAULT_RETAINED_EVENTS = 10_000
/** Events written in one store batch; more wait for the next. */
export const MAX_EVENTS_PER_WRITE = 2_000

export interface EventJournalInit {
  store: Store
  /** @default DEFAULT_RETAINED_EVENTS */
  retainedEvents?: number
  now?: () => number
  /** Called when a batch of events could not be stored (they are dropped; ids stay unused). */
  onWriteError?: (error: unknown, dropped: number) => void
}

/** What a client resuming after `lastEventId` gets: the events it missed, or a reset when they are gone. */
export type Resumption =
  { kind: 'events', events: OperatorEvent[], complete: boolean } |
  { kind: 'reset', reason: 'evicted' | 'unknown-id' }

/** Keys sort like the ids they hold. */
export function eventKey (id: number): string {
  return id.toString().padStart(16, '0')
}

/**
 * The operators' event journal: every change gets the next id of a sequence
 * that only grows, is stored durably, and only then is announced to live
 * clients, so an id a client has seen survives a restart. The store keeps the
 * newest `retainedEvents` as a ring that clients resume from with
 * `Last-Event-ID`.
 */
export class EventJournal extends EventEmitter<{ appended: [events: OperatorEvent[]] }> {
  private readonly store: Store
  private readonly retainedEvents: number
  private readonly now: () => number
  private readonly onWriteError: NonNullable<EventJournalInit['onWriteError']>
  private nextId = 1
  private writtenId = 0
  private oldestId = 1
  private pending: OperatorEvent[] = []
  private flushing: Promise<void> | undefined

  constructor (init: EventJournalInit) {
    super()
    this.store = init.store
    this.retainedEvents = Math.max(1, init.retainedEvents ?? DEFAULT_RETAINED_EVENTS)
    this.now = init.now ?? Date.now
    this.onWriteError = init.onWriteError ?? (() => {})
    // One listener per connected client.
    this.setMaxListeners(0)
  }

  /** Reads where the sequence stands. */
  async open (): Promise<void> {
    for await (const event of this.store.collections.events.values({ reverse: true, limit: 1 })) this.writtenId = event.id
    for await (const event of this.store.collections.events.values({ limit: 1 })) this.oldestId = event.id
    if (this.writtenId === 0) this.oldestId = 1
    this.nextId = this.writtenId + 1
  }

  /** The id of the newest event stored and announced; 0 before the first. */
  get lastId (): number {
    return this.writtenId
  }

  /** The id of the oldest event still kept. */
  get oldestRetainedId (): number {
    return this.oldestId
  }

  /** Queues an event; it is stored with others of the same moment, then announced. */
  append (type: OperatorEventType, data: Record<string, unknown>, taskId?: string): void {
    const event: OperatorEvent = { id: this.nextId++, type, at: new Date(this.now()).toISOString(), data }
    if (taskId !== undefined) event.taskId = taskId
    this.pending.push(event)
    this.flushing ??= this.flushAll()
  }

  /** Resolves once every event appended so far is stored and announced. */
  async flushed (): Promise<void> {
    while (this.flushing !== undefined) await this.flushing
  }

  private async flushAll (): Promise<void> {
    // Let the rest of this tick append too, so they share one write.
    await new Promise(resolve => setImmediate(resolve))
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, MAX_EVENTS_PER_WRITE)
        await this.write(batch)
      }
    } finally {
      this.flushing = undefined
    }
  }

  private async write (batch: OperatorEvent[]): Promise<void> {
    const newest = batch[batch.length - 1].id
    const keepFrom = Math.max(this.oldestId, newest - this.retainedEvents + 1)
    const operations: WriteOperation[] = batch.map(event => ({ type: 'put', collection: 'events', key: eventKey(event.id), value: event }))
    for (let id = this.oldestId; id < keepFrom; id++) operations.push({ type: 'del', collection: 'events', key: eventKey(id) })
    try {
      await this.store.write(operations)
    } catch (error) {
      this.onWriteError(error, batch.length)
      return
    }
    this.oldestId = keepFrom
    this.writtenId = newest
    this.emit('appended', batch)
  }

  /**
   * The events after `lastEventId` (at most `limit`, up to `untilId`), or a
   * reset when some of them are no longer kept or the id was never issued.
   */
  async resume (lastEventId: number, untilId: number, limit: number): Promise<Resumption> {
    if (lastEventId > this.writtenId) return { kind: 'reset', reason: 'unknown-id' }
    if (lastEventId < this.oldestId - 1) return { kind: 'reset', reason: 'evicted' }
    const events: OperatorEvent[] = []
    let complete = true
    for await (const event of this.store.collections.events.values({ after: eventKey(lastEventId), limit: limit + 1 })) {
      if (event.id > untilId) break
      if (events.length === limit) {
        complete = false
        break
      }
      events.push(event)
    }
    // The ring may have moved on while the events were read.
    if (lastEventId < this.oldestId - 1) return { kind: 'reset', reason: 'evicted' }
    return { kind: 'events', events, complete }
  }
}
