import test from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EventJournal } from '../../coordinator/events/journal.js'
import { EventSession, type EventSink, type IntervalTimer } from '../../coordinator/events/session.js'
import { SseParser, formatSseComment, formatSseMessage, type SseMessage } from '../../coordinator/events/sse.js'
import { LevelStore } from '../../coordinator/store/level-store.js'

async function openJournal (t: { teardown: (fn: () => Promise<void>) => void }, retainedEvents = 100): Promise<{ journal: EventJournal, reopen: () => Promise<EventJournal> }> {
  const dir = await mkdtemp(join(tmpdir(), 'md-events-'))
  let store = await LevelStore.open(dir)
  const journal = new EventJournal({ store, retainedEvents })
  await journal.open()
  t.teardown(async () => {
    await store.close()
    await rm(dir, { recursive: true, force: true })
  })
  return {
    journal,
    reopen: async () => {
      await journal.flushed()
      await store.close()
      store = await LevelStore.open(dir)
      const again = new EventJournal({ store, retainedEvents })
      await again.open()
      return again
    }
  }
}

function parseAll (text: string): SseMessage[] {
  const messages: SseMessage[] = []
  new SseParser({ onMessage: message => { messages.push(message) } }).push(text)
  return messages
}

/** A sink that keeps what is written; `unsent` stands for bytes the client has not read. */
class MemorySink implements EventSink {
  text = ''
  unsent = 0
  closed = false
  holdBytes = false
  private drained: Array<() => void> = []
  write (text: string): boolean {
    this.text += text
    if (this.holdBytes) this.unsent += Buffer.byteLength(text)
    return !this.holdBytes
  }

  get bufferedBytes (): number { return this.unsent }
  async waitForDrain (): Promise<void> { await new Promise<void>(resolve => { this.drained.push(resolve) }) }
  drain (): void {
    this.unsent = 0
    for (const resolve of this.drained.splice(0)) resolve()
  }

  close (): void { this.closed = true }
  messages (): SseMessage[] { return parseAll(this.text) }
}

/** An interval timer fired by hand. */
class ManualTimer implements IntervalTimer {
  callbacks = new Map<number, () => void>()
  private next = 1
  setInterval (callback: () => void): unknown { this.callbacks.set(this.next, callback); return this.next++ }
  clearInterval (handle: unknown): void { this.callbacks.delete(handle as number) }
  fire (): void { for (const callback of this.callbacks.values()) callback() }
}

async function until (check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !check(); i++) await new Promise(resolve => setImmediate(resolve))
  if (!check()) throw new Error('condition not reached')
}

test('event-stream frames survive a round trip, whatever the chunking', t => {
  const frames = formatSseMessage({ id: 7, event: 'status', data: 'line one\nline two\r\nthree' }) + formatSseComment('heartbeat') + formatSseMessage({ event: 'ready', data: '{}' })
  const whole = parseAll(frames)
  t.deepEqual(whole, [{ event: 'status', data: 'line one\nline two\nthree', id: '7' }, { event: 'ready', data: '{}' }])
  for (let size = 1; size < 9; size++) {
    const messages: SseMessage[] = []
    const comments: string[] = []
    const parser = new SseParser({ onMessage: message => { messages.push(message) }, onComment: text => { comments.push(text) } })
    for (let index = 0; index < frames.length; index += size) parser.push(frames.slice(index, index + size))
    t.deepEqual(messages, whole, `chunks of ${size}`)
    t.deepEqual(comments, ['heartbeat'])
  }
  t.deepEqual(parseAll('data:x\r\rid: 3\rdata\r\r\n'), [{ event: 'message', data: 'x' }, { event: 'message', data: '', id: '3' }], 'bare CR line ends and fields without a colon')
  t.deepEqual(parseAll('event: a\nid: x\ndata: 1\n\n'.replace('id: x', 'id: x\0y')), [{ event: 'a', data: '1' }], 'an id with NUL is ignored')
  t.is(formatSseMessage({ id: '1\n2', event: 'a\nb', data: '' }), 'id: 12\nevent: ab\ndata: \n\n', 'no field injection through ids or names')
})

test('the parser refuses a line longer than its limit instead of buffering it', t => {
  const parser = new SseParser({ onMessage: () => {}, maxLineChars: 16 })
  parser.push('data: short\n\n')
  const error = t.throws(() => { parser.push('data: ' + 'x'.repeat(20)) })
  t.is(error?.name, 'SseLineTooLongError')
})

test('the journal numbers events in order, keeps a bounded ring, and continues after a restart', async t => {
  const { journal, reopen } = await openJournal(t, 5)
  const seen: number[] = []
  journal.on('appended', events => { seen.push(...events.map(event => event.id)) })
  for (let index = 0; index < 8; index++) journal.append('task', { index }, `task-${index % 2}`)
  await journal.flushed()
  t.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8], 'announced once stored, in order')
  t.is(journal.lastId, 8)
  t.is(journal.oldestRetainedId, 4, 'only the newest five are kept')
  const resumed = await journal.resume(5, journal.lastId, 100)
  t.deepEqual(resumed.kind === 'events' ? resumed.events.map(event => event.id) : resumed, [6, 7, 8])
  const whole = await journal.resume(3, 8, 100)
  t.deepEqual(whole.kind === 'events' ? [whole.events.map(event => event.id), whole.complete] : whole, [[4, 5, 6, 7, 8], true], 'resuming right before the oldest kept is whole')
  t.deepEqual(await journal.resume(2, 8, 100), { kind: 'reset', reason: 'evicted' })
  t.deepEqual(await journal.resume(9, 8, 100), { kind: 'reset', reason: 'unknown-id' })
  const page = await journal.resume(3, 8, 2)
  t.deepEqual(page.kind === 'events' ? [page.events.map(event => event.id), page.complete] : page, [[4, 5], false], 'paged')

  const again = await reopen()
  t.is(again.lastId, 8, 'the sequence survives a restart')
  t.is(again.oldestRetainedId, 4)
  again.append('device', {})
  await again.flushed()
  t.is(again.lastId, 9, 'and only grows')
  const after = await again.resume(6, 9, 100)
  t.deepEqual(after.kind === 'events' ? after.events.map(event => [event.id, event.type]) : after, [[7, 'task'], [8, 'task'], [9, 'device']])
})

test('a session replays what the client missed, marks ready, then streams live without gaps or repeats', async t => {
  const { journal } = await openJournal(t)
  for (let index = 0; index < 6; index++) journal.append('status', { index }, index % 2 === 0 ? 'task-a' : 'task-b')
  await journal.flushed()
  const sink = new MemorySink()
  const closed = new AbortController()
  const running = new EventSession({ journal, sink, taskId: 'task-a', lastEventId: 2, timer: new ManualTimer() }).run(closed.signal)
  await until(() => sink.messages().some(message => message.event === 'ready'))
  journal.append('status', { index: 6 }, 'task-a')
  journal.append('status', { index: 7 }, 'task-b')
  await journal.flushed()
  await until(() => sink.messages().length >= 4)
  closed.abort()
  t.is(await running, 'closed')
  t.true(sink.closed)
  const messages = sink.messages()
  t.deepEqual(messages.map(message => [message.event, message.id]), [['status', '3'], ['status', '5'], ['ready', '6'], ['status', '7']])
  const last = JSON.parse(messages[3].data)
  t.like(last, { id: 7, type: 'status', taskId: 'task-a', data: { index: 6 } })
  t.true(sink.text.startsWith('retry: '), 'tells clients how soon to reconnect')
})

test('a session resuming from an id no longer kept gets a reset it can act on', async t => {
  const { journal } = await openJournal(t, 3)
  for (let index = 0; index < 10; index++) journal.append('task', { index })
  await journal.flushed()
  const sink = new MemorySink()
  const closed = new AbortController()
  const running = new EventSession({ journal, sink, lastEventId: 4, timer: new ManualTimer() }).run(closed.signal)
  await until(() => sink.messages().length > 0)
  closed.abort()
  await running
  const [reset] = sink.messages()
  t.is(reset.event, 'reset')
  t.is(reset.id, '10', 'resuming from the reset continues after the present')
  t.deepEqual(JSON.parse(reset.data), { reason: 'evicted', lastEventId: 10, oldestEventId: 8 })
})

test('heartbeats are comments; a client that stops reading is disconnected instead of buffered', async t => {
  const { journal } = await openJournal(t)
  const sink = new MemorySink()
  const timer = new ManualTimer()
  const running = new EventSession({ journal, sink, timer, maxBufferedBytes: 4096 }).run(new AbortController().signal)
  await until(() => sink.messages().length === 1)
  timer.fire()
  t.regex(sink.text, /\n: heartbeat \d{4}-/)
  sink.holdBytes = true
  for (let index = 0; index < 40; index++) journal.append('status', { padding: 'x'.repeat(200) }, 'task-a')
  await journal.flushed()
  t.is(await running, 'slow-client')
  t.true(sink.closed)
  t.is(timer.callbacks.size, 0, 'its heartbeat is stopped')
  t.is(journal.listenerCount('appended'), 0, 'and it no longer listens')
})

test('a long backlog is replayed page by page, waiting for the client to read', async t => {
  const { journal } = await openJournal(t, 2000)
  for (let index = 0; index < 1200; index++) journal.append('status', { index }, 'task-a')
  await journal.flushed()
  const sink = new MemorySink()
  sink.holdBytes = true
  const closed = new AbortController()
  const running = new EventSession({ journal, sink, lastEventId: 0, timer: new ManualTimer(), maxBufferedBytes: 10 * 1024 * 1024 }).run(closed.signal)
  await until(() => sink.messages().length === 500)
  await new Promise(resolve => setTimeout(resolve, 20))
  t.is(sink.messages().length, 500, 'waits after a page until the client drains')
  sink.drain()
  await until(() => sink.messages().length === 1000)
  sink.holdBytes = false
  sink.drain()
  await until(() => sink.messages().some(message => message.event === 'ready'))
  closed.abort()
  await running
  const ids = sink.messages().map(message => Number(message.id))
  t.is(ids.length, 1201)
  t.deepEqual(ids.slice(0, 1200), Array.from({ length: 1200 }, (_, index) => index + 1))
})

test('a stream ends at the next heartbeat once its token no longer holds', async t => {
  const { journal } = await openJournal(t)
  const sink = new MemorySink()
  const timer = new ManualTimer()
  let authorized = true
  const running = new EventSession({ journal, sink, timer, stillAuthorized: async () => authorized }).run(new AbortController().signal)
  await until(() => sink.messages().length === 1)
  timer.fire()
  await until(() => sink.text.includes(': heartbeat'))
  authorized = false
  timer.fire()
  t.is(await running, 'unauthorized')
  t.true(sink.closed)
})
