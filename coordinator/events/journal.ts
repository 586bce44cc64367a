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

/** The counter that numbers events when several coordinators share the store. */
export const EVENT_ID_COUNTER = 'events:last-id'

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
  /** Several coordinators share the store: ids come from its numbered appends, and their events are announced here too. */
  private readonly shared: boolean
  /** Reads of events stored by others (or by this one), one at a time, so that they are announced in id order. */
  private catchingUp: Promise<void> = Promise.resolve()
  private readonly onChange = (change: { collection: string }): void => { if (change.collection === 'events') void this.catchUp() }
  private readonly onResync = (): void => { void this.catchUp() }

  constructor (init: EventJournalInit) {
    super()
    this.store = init.store
    this.retainedEvents = Math.max(1, init.retainedEvents ?? DEFAULT_RETAINED_EVENTS)
    this.now = init.now ?? Date.now
    this.onWriteError = init.onWriteError ?? (() => {})
    this.shared = this.store.appendNumbered !== undefined && this.store.changes !== undefined
    // One listener per connected client.
    this.setMaxListeners(0)
  }

  /** Reads where the sequence stands. */
  async open (): Promise<void> {
    for await (const event of this.store.collections.events.values({ reverse: true, limit: 1 })) this.writtenId = event.id
    for await (const event of this.store.collections.events.values({ limit: 1 })) this.oldestId = event.id
    if (this.writtenId === 0) this.oldestId = 1
    this.nextId = this.writtenId + 1
    if (this.shared) {
      // Numbers continue from the newest event, whoever wrote it.
      const counted = await this.store.counters.get(EVENT_ID_COUNTER)
      if (counted < this.writtenId) await this.store.write([{ type: 'add', counter: EVENT_ID_COUNTER, delta: this.writtenId - counted }])
      this.store.changes!.on('change', this.onChange)
      this.store.changes!.on('resync', this.onResync)
    }
  }

  /** Stops following other coordinators' events. */
  close (): void {
    this.store.changes?.off('change', this.onChange)
    this.store.changes?.off('resync', this.onResync)
  }

  /**
   * Announces the stored events after the newest announced one, in id order:
   * other coordinators' events, and this one's once stored. Numbered appends
   * commit in id order, so nothing below the newest read is still to come.
   */
  private async catchUp (): Promise<void> {
    const next = this.catchingUp.then(async () => {
      for (;;) {
        const events: OperatorEvent[] = []
        for await (const event of this.store.collections.events.values({ after: eventKey(this.writtenId), limit: MAX_EVENTS_PER_WRITE })) events.push(event)
        if (events.length === 0) return
        this.writtenId = events[events.length - 1].id
        this.emit('appended', events)
        if (events.length < MAX_EVENTS_PER_WRITE) return
      }
    }).catch(error => { this.onWriteError(error, 0) })
    this.catchingUp = next
    await next
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
    if (this.shared) {
      await this.writeNumbered(batch)
      return
    }
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

  /** Stores a batch under the shared sequence's next ids, trims the ring, then announces what is new in id order. */
  private async writeNumbered (batch: OperatorEvent[]): Promise<void> {
    let kept = this.oldestId
    try {
      for await (const event of this.store.collections.events.values({ limit: 1 })) this.oldestId = event.id
      await this.store.appendNumbered!(EVENT_ID_COUNTER, batch.length, first => {
        const operations: WriteOperation[] = batch.map((event, at) => {
          event.id = first + at
          return { type: 'put', collection: 'events', key: eventKey(event.id), value: event }
        })
        const keepFrom = Math.max(this.oldestId, first + batch.length - this.retainedEvents)
        for (let id = this.oldestId; id < keepFrom; id++) operations.push({ type: 'del', collection: 'events', key: eventKey(id) })
        kept = keepFrom
        return operations
      })
      this.oldestId = kept
    } catch (error) {
      this.onWriteError(error, batch.length)
      return
    }
    await this.catchUp()
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
