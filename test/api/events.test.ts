import test from 'ava'
import { createServer, type RequestListener, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { watchTask } from '../../coordinator/cli/watch.js'
import { createApp } from '../../coordinator/http/app.js'
import { openServices } from '../../coordinator/services.js'
import type { SseMessage } from '../../coordinator/events/sse.js'
import { signStatusRecord, type StatusRecord } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'
import { enrollDevice, openTestCoordinator, type EnrolledDevice, type TestCoordinator } from '../helpers/coordinator.js'

const SCRIPT = Buffer.from('#!/bin/sh\necho installed\n')

async function listen (listener: RequestListener): Promise<{ server: Server, url: string }> {
  const server = createServer(listener)
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

async function closeServer (server: Server): Promise<void> {
  server.closeAllConnections()
  await new Promise(resolve => server.close(resolve))
}

/** Collects a stream's messages until `enough` says so, then closes it. */
async function collect (client: ApiClient, path: string, enough: (messages: SseMessage[]) => boolean, lastEventId?: string, onReady?: () => void): Promise<{ messages: SseMessage[], comments: string[] }> {
  const messages: SseMessage[] = []
  const comments: string[] = []
  const done = new AbortController()
  await client.streamEvents(path, {
    signal: done.signal,
    ...(lastEventId !== undefined ? { lastEventId } : {}),
    onComment: text => { comments.push(text) },
    onMessage: message => {
      messages.push(message)
      if (message.event === 'ready') onReady?.()
      if (enough(messages)) done.abort()
    }
  }).catch(error => { if (!done.signal.aborted) throw error })
  return { messages, comments }
}

async function setUp (c: TestCoordinator): Promise<{ device: EnrolledDevice, taskId: string, packageId: string, report: (seq: number, state: StatusRecord['state'], extra?: Partial<StatusRecord>) => Promise<void> }> {
  const device = await enrollDevice(c, { hostname: 'pc-events' })
  const { body: pkg } = await c.http.post('/v1/packages').set('authorization', `Bearer ${c.adminToken}`)
    .field('metadata', JSON.stringify({ name: 'tool', version: '1' })).attach('file', SCRIPT, 'tool.sh').expect(201)
  const { body: task } = await c.http.post('/v1/tasks').set('authorization', `Bearer ${c.adminToken}`).send({ packageId: pkg.id, action: 'install', targets: { all: true } }).expect(201)
  const report = async (seq: number, state: StatusRecord['state'], extra: Partial<StatusRecord> = {}): Promise<void> => {
    const record: StatusRecord = {
      type: 'meshdeploy.status', deviceId: device.deviceId, taskId: task.id, revision: 1, attempt: 1, seq, state, at: Date.now(), bytesTotal: pkg.sizeBytes, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0, ...extra
    }
    await c.http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential}`).send({ records: [signStatusRecord(record, device.key)] }).expect(200)
  }
  return { device, taskId: task.id, packageId: pkg.id, report }
}

test('GET /v1/events needs an operator token and is in the OpenAPI document as an event stream', async t => {
  const c = await openTestCoordinator()
  t.teardown(async () => { await c.close() })
  const device = await enrollDevice(c)
  t.is((await c.http.get('/v1/events')).status, 401)
  t.is((await c.http.get('/v1/events').set('authorization', `Bearer ${device.credential}`)).status, 403, 'devices do not get operator events')
  t.is((await c.http.get('/v1/events?taskId=task_nope').set('authorization', `Bearer ${c.adminToken}`)).status, 404)
  const invalid = await c.http.get('/v1/events').set('authorization', `Bearer ${c.adminToken}`).set('last-event-id', 'abc')
  t.is(invalid.status, 400)
  t.is(invalid.body.errors[0].path, 'lastEventId')
  const { body: document } = await c.http.get('/v1/openapi.json').set('authorization', `Bearer ${c.adminToken}`)
  const operation = document.paths['/v1/events'].get
  t.truthy(operation.responses['200'].content['text/event-stream'])
  t.deepEqual(operation.parameters.map((parameter: { name: string }) => parameter.name).sort(), ['lastEventId', 'taskId'])
})

test('operators see status, task and device changes live, filtered by task, and resume after a restart', async t => {
  const c = await openTestCoordinator()
  t.teardown(async () => { await c.close() })
  let { server, url } = await listen(createApp(c.services).callback())
  t.teardown(async () => { await closeServer(server) })
  const client = new ApiClient({ url, token: c.adminToken })
  t.teardown(() => { client.close() })
  const { taskId, report } = await setUp(c)

  const history = await collect(client, '/v1/events', messages => messages.some(message => message.event === 'ready'), '0')
  t.deepEqual(history.messages.map(message => message.event), ['device', 'task', 'ready'], 'from the beginning: enrollment, task creation')
  const ready = history.messages[2]
  t.deepEqual(JSON.parse(ready.data), { lastEventId: Number(ready.id), oldestEventId: 1 })
  t.like(JSON.parse(history.messages[1].data), { type: 'task', taskId, data: { taskId, status: 'active' } })

  let isReady = (): void => {}
  const ready_ = new Promise<void>(resolve => { isReady = resolve })
  const live = collect(client, `/v1/events?taskId=${taskId}`, messages => messages.filter(message => message.event === 'status').length === 2, undefined, isReady)
  await ready_
  await report(1, 'downloading', { bytesDone: 10, bytesFromOrigin: 10 })
  await report(2, 'succeeded', { bytesDone: SCRIPT.byteLength, bytesFromOrigin: SCRIPT.byteLength, exitCode: 0 })
  const { messages } = await live
  const statuses = messages.filter(message => message.event === 'status').map(message => JSON.parse(message.data))
  t.deepEqual(statuses.map(event => event.data.state), ['downloading', 'succeeded'])
  t.like(statuses[1], { type: 'status', taskId, data: { exitCode: 0, attempt: 1, seq: 2 } })
  t.true(Number(messages[messages.length - 1].id) > Number(ready.id), 'ids only grow')

  // The coordinator restarts on the same data: a client resumes from the last id it saw.
  const lastSeen = messages.find(message => message.event === 'status')!.id!
  await closeServer(server)
  await c.services.close()
  c.services = await openServices({ dataDir: c.dataDir, ...(c.store !== undefined ? { store: c.store } : {}), logger: silentLogger(), chunkSizeBytes: 64 * 1024 })
  ;({ server, url } = await listen(createApp(c.services).callback()))
  const after = new ApiClient({ url, token: c.adminToken })
  t.teardown(() => { after.close() })
  const resumed = await collect(after, `/v1/events?taskId=${taskId}`, found => found.some(message => message.event === 'ready'), lastSeen)
  t.deepEqual(resumed.messages.map(message => message.event), ['status', 'ready'], 'the missed record, once')
  t.is(JSON.parse(resumed.messages[0].data).data.state, 'succeeded')
  const tooNew = await collect(after, '/v1/events', found => found.length > 0, '999999')
  t.is(tooNew.messages[0].event, 'reset', 'an id this coordinator never issued asks the client to start over')
  t.is(JSON.parse(tooNew.messages[0].data).reason, 'unknown-id')
})

class Sink extends Writable {
  text = ''
  override _write (chunk: Buffer, _encoding: string, callback: () => void): void {
    this.text += chunk.toString()
    callback()
  }
}

test('task watch redraws on events instead of polling, and polls when the stream is unavailable', async t => {
  const c = await openTestCoordinator()
  t.teardown(async () => { await c.close() })
  const requests: string[] = []
  const callback = createApp(c.services).callback()
  const { server, url } = await listen((request, response) => { requests.push(request.url ?? ''); callback(request, response) })
  t.teardown(async () => { await closeServer(server) })
  const client = new ApiClient({ url, token: c.adminToken })
  t.teardown(() => { client.close() })
  const { device, taskId, report } = await setUp(c)

  const modes: string[] = []
  let isLive = (): void => {}
  const live = new Promise<void>(resolve => { isLive = resolve })
  // A poll every ten minutes: only the event stream can end this watch in time.
  const watching = watchTask(client, taskId, { intervalMs: 600_000, timeoutMs: 120_000, output: new Sink() as unknown as NodeJS.WriteStream, onMode: mode => { modes.push(mode); if (mode === 'events') isLive() } })
  await live
  await report(1, 'installing')
  await report(2, 'succeeded', { exitCode: 0 })
  const final = await watching
  t.is(final.devices[0].state, 'succeeded')
  t.true(modes.includes('events'), modes.join(','))
  t.is(requests.filter(path => path.startsWith('/v1/events')).length, 1, 'one stream')

  // A coordinator that does not offer the stream: the watch polls.
  const { server: old, url: oldUrl } = await listen((request, response) => {
    if (request.url?.startsWith('/v1/events') === true) {
      response.writeHead(404, { 'content-type': 'application/problem+json' })
      response.end(JSON.stringify({ type: 'about:blank', title: 'Not Found', status: 404, reason: 'not-found' }))
      return
    }
    callback(request, response)
  })
  t.teardown(async () => { await closeServer(old) })
  const oldClient = new ApiClient({ url: oldUrl, token: c.adminToken })
  t.teardown(() => { oldClient.close() })
  const second = await c.http.post('/v1/tasks').set('authorization', `Bearer ${c.adminToken}`).send({ packageId: final.task.packageId, action: 'install', targets: { all: true } }).expect(201)
  const pollModes: string[] = []
  const polling = watchTask(oldClient, second.body.id, { intervalMs: 100, timeoutMs: 120_000, output: new Sink() as unknown as NodeJS.WriteStream, onMode: mode => { pollModes.push(mode) } })
  const record: StatusRecord = { type: 'meshdeploy.status', deviceId: device.deviceId, taskId: second.body.id, revision: 1, attempt: 1, seq: 1, state: 'already-installed', at: Date.now(), bytesTotal: 0, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0 }
  await c.http.post('/v1/agents/status').set('authorization', `Bearer ${device.credential}`).send({ records: [signStatusRecord(record, device.key)] }).expect(200)
  const settled = await polling
  t.is(settled.devices[0].state, 'already-installed')
  t.deepEqual(pollModes, ['polling'])
})
