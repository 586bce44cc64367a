/**
 * Bad input from an enrolled device: a laptop taken over, holding a valid
 * credential and key. Each case sends what such a device would send and
 * asserts the named reason and that nothing changed — no assignment, no
 * progress, no record of another device lost, no file.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http'
import { generateKeyPair, signStatusRecord, toHex, type SignedEnvelope, type StatusRecord } from '../../protocol/index.js'
import { enrollDevice, type EnrolledDevice } from '../helpers/coordinator.js'
import { runCli } from '../helpers/processes.js'
import { openApiFixture, snapshot, type ApiFixture } from './api-fixture.js'

const bearer = (token: string): string => `Bearer ${token}`

function recordOf (f: ApiFixture, device: EnrolledDevice, fields: Partial<StatusRecord> = {}): StatusRecord {
  return {
    type: 'meshdeploy.status', deviceId: device.deviceId, taskId: f.taskId, revision: 1, attempt: 1, seq: 1, state: 'downloading', at: f.clock.now(),
    bytesTotal: 10, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0, ...fields
  }
}

/** A record of `device`, signed by it. */
function signed (f: ApiFixture, device: EnrolledDevice, fields: Partial<StatusRecord> = {}): SignedEnvelope {
  return signStatusRecord(recordOf(f, device, fields), device.key)
}

/** Posts signed records with `via`'s credential (a device's own, or its site relay's batch). */
async function postStatus (f: ApiFixture, via: EnrolledDevice, records: SignedEnvelope[]): Promise<{ status: number, body: any }> {
  const answer = await f.c.http.post('/v1/agents/status').set('authorization', bearer(via.credential)).send({ records })
  return { status: answer.status, body: answer.body }
}

async function enroll (f: ApiFixture, hostname: string): Promise<EnrolledDevice> {
  return await enrollDevice(f.c, { hostname })
}

async function assignedTasks (f: ApiFixture, device: EnrolledDevice): Promise<string[]> {
  const { body } = await f.c.http.get('/v1/agents/assignments').set('authorization', bearer(device.credential)).expect(200)
  return body.assignments.map((assignment: any) => assignment.taskId)
}

async function progress (f: ApiFixture, taskId: string): Promise<unknown> {
  return (await f.c.http.get(`/v1/tasks/${taskId}`).set('authorization', bearer(f.viewer)).expect(200)).body.progress
}

async function storedSeqs (f: ApiFixture, taskId: string, device: EnrolledDevice): Promise<number[]> {
  const { body } = await f.c.http.get(`/v1/tasks/${taskId}/devices/${device.deviceId}/history`).set('authorization', bearer(f.viewer)).expect(200)
  return body.records.map((record: StatusRecord) => record.seq)
}

interface StatusCase {
  name: string
  /** The reason each refused record is given, by its index in the batch. */
  refused: Record<number, string>
  /** Records of the batch stored now (the good ones beside the refused). */
  stored?: number
  prepare?: (f: ApiFixture) => Promise<any>
  send: (f: ApiFixture, prepared: any) => Promise<{ status: number, body: any }>
  check?: (f: ApiFixture, prepared: any) => Promise<string | undefined>
}

const HOUR_MS = 3600_000

const statusCases: StatusCase[] = [
  {
    name: 'a device reporting on a task that targets only another device',
    refused: { 0: 'not-assigned' },
    prepare: async f => {
      const other = await enroll(f, 'pc-other')
      const { body } = await f.c.http.post('/v1/tasks').set('authorization', bearer(f.operator)).send({ packageId: f.packageId, action: 'install', targets: { deviceIds: [other.deviceId] } }).expect(201)
      return { taskId: body.id, progress: await progress(f, body.id) }
    },
    send: async (f, { taskId }) => await postStatus(f, f.device, [signed(f, f.device, { taskId, state: 'succeeded', bytesDone: 10 })]),
    check: async (f, { taskId, progress: before }) => {
      if ((await assignedTasks(f, f.device)).includes(taskId)) return 'the device got the task as an assignment'
      if (JSON.stringify(await progress(f, taskId)) !== JSON.stringify(before)) return 'the task\'s progress changed'
    }
  },
  {
    name: 'a record dated beyond the representable range, in a relay\'s batch between two devices\' good records',
    refused: { 1: 'time-out-of-range' },
    stored: 2,
    prepare: async f => {
      const devices = { relay: await enroll(f, 'relay'), other: await enroll(f, 'pc-other') }
      await f.c.services.scheduler.tick()
      return devices
    },
    send: async (f, { relay, other }) => {
      // An unrelated device posts at the same time: its answer must not depend on the bad batch.
      const [answer, unrelated] = await Promise.all([
        postStatus(f, relay, [signed(f, relay), signed(f, f.device, { at: Number.MAX_SAFE_INTEGER }), signed(f, other)]),
        postStatus(f, other, [signed(f, other, { seq: 2 })])
      ])
      if (unrelated.status !== 200 || unrelated.body.acknowledged.length !== 1) throw new Error(`the concurrent post failed: ${unrelated.status} ${JSON.stringify(unrelated.body)}`)
      return answer
    },
    check: async (f, { relay, other }) => {
      if (JSON.stringify(await storedSeqs(f, f.taskId, relay)) !== '[1]') return 'the relay\'s own record was lost'
      if (JSON.stringify(await storedSeqs(f, f.taskId, other)) !== '[1,2]') return 'another device\'s records were lost'
      if (JSON.stringify(await storedSeqs(f, f.taskId, f.device)) !== '[]') return 'the bad record was stored'
    }
  },
  {
    name: 'a record dated two hours ahead of the coordinator\'s clock',
    refused: { 0: 'time-out-of-range' },
    send: async f => await postStatus(f, f.device, [signed(f, f.device, { at: f.clock.now() + 2 * HOUR_MS })])
  },
  {
    name: 'a record dated a day before its task existed',
    refused: { 0: 'time-out-of-range' },
    send: async f => await postStatus(f, f.device, [signed(f, f.device, { at: f.clock.now() - 24 * HOUR_MS })])
  },
  {
    name: 'a record with an absurd revision (2^53−1), followed by the device\'s genuine one',
    refused: { 0: 'revision-ahead' },
    stored: 1,
    send: async f => await postStatus(f, f.device, [signed(f, f.device, { revision: Number.MAX_SAFE_INTEGER, state: 'failed', final: true }), signed(f, f.device, { seq: 2, state: 'failed', final: true })]),
    check: async f => {
      const row = (await f.c.http.get(`/v1/tasks/${f.taskId}/devices`).set('authorization', bearer(f.viewer)).expect(200)).body.devices.find((r: any) => r.deviceId === f.device.deviceId)
      if (row.revision !== 1 || row.seq !== 2) return `the row is ${JSON.stringify(row)}`
      // The genuine failure counts: a re-run for failed devices is accepted.
      const rerun = await f.c.http.post(`/v1/tasks/${f.taskId}/rerun`).set('authorization', bearer(f.operator))
      if (rerun.status !== 200) return `rerun answered ${rerun.status} ${JSON.stringify(rerun.body)}`
    }
  },
  {
    name: 'a record with the coordinator-only state pending',
    refused: { 0: 'state-not-reportable' },
    send: async f => await postStatus(f, f.device, [signed(f, f.device, { state: 'pending' })])
  },
  {
    name: 'a record with a sequence number beyond a billion',
    refused: { 0: 'seq-out-of-range' },
    send: async f => await postStatus(f, f.device, [signed(f, f.device, { seq: 2 ** 40 })])
  },
  {
    name: 'a record counting more bytes than the task\'s package holds',
    refused: { 0: 'bytes-out-of-range' },
    send: async f => await postStatus(f, f.device, [signed(f, f.device, { bytesTotal: 2 ** 50, bytesDone: 2 ** 50 })])
  }
]

/** The snapshot without what a batch's good records add. */
function withoutStatus (state: any): any {
  const { statusLog: _log, deviceTasks: _rows, ...rest } = state
  return rest
}

for (const [index, kase] of statusCases.entries()) {
  test(`trust case ${index + 1}: ${kase.name} → ${Object.values(kase.refused).join(', ')}`, async t => {
    const f = await openApiFixture()
    try {
      const prepared = await kase.prepare?.(f)
      const before: any = await snapshot(f.c)
      const answer = await kase.send(f, prepared)
      t.is(answer.status, 200, JSON.stringify(answer.body))
      t.deepEqual(Object.fromEntries(answer.body.rejected.map((rejection: any) => [rejection.index, rejection.reason])), kase.refused, JSON.stringify(answer.body.rejected))
      for (const rejection of answer.body.rejected) t.true(typeof rejection.message === 'string' && rejection.message.length > 0)
      t.is(answer.body.acknowledged.length, kase.stored ?? 0)
      const after: any = await snapshot(f.c)
      if (kase.stored === undefined) {
        t.deepEqual(after, before, 'nothing changed')
      } else {
        t.deepEqual(withoutStatus(after), withoutStatus(before), 'nothing but the good records changed')
        t.true(after.statusLog >= before.statusLog + kase.stored)
      }
      for (const task of f.c.services.tasks.openTasks()) if (task.id !== f.taskId) t.false(f.c.services.tasks.releases.isReleased(task.id, f.device.deviceId), 'no release was made')
      t.is(await kase.check?.(f, prepared), undefined)
    } finally {
      await f.close()
    }
  })
}

interface Answer {
  status: number
  body: any
  headers: Record<string, string | string[] | undefined>
  type: string
}

interface ApiCase {
  name: string
  status: number
  reason: string
  prepare?: (f: ApiFixture) => Promise<any>
  send: (f: ApiFixture, prepared: any) => Promise<Answer>
  /** Further checks on the answer and the coordinator; a string says what is wrong. */
  check?: (f: ApiFixture, answer: Answer, prepared: any) => Promise<string | undefined> | string | undefined
}

async function enrollmentToken (f: ApiFixture, fields: object): Promise<string> {
  return (await f.c.http.post('/v1/enrollment-tokens').set('authorization', bearer(f.operator)).send(fields).expect(201)).body.token
}

function enrollWith (f: ApiFixture, token: string, fields: object): Promise<Answer> {
  return f.c.http.post('/v1/agents/enroll').send({ token, publicKey: toHex(generateKeyPair().publicKey), hostname: 'newcomer', platform: 'linux', arch: 'x64', ...fields }) as unknown as Promise<Answer>
}

/** A package and a task for one device only; returns the package's first chunk. */
async function taskOnlyFor (f: ApiFixture, device: EnrolledDevice, name = 'other'): Promise<{ taskId: string, chunk: string }> {
  const pkg = await f.c.http.post('/v1/packages').set('authorization', bearer(f.operator))
    .field('metadata', JSON.stringify({ name, version: '1' })).attach('file', Buffer.from(`#!/bin/sh\n: ${randomBytes(200).toString('hex')}\n`), `${name}.sh`).expect(201)
  const { body: task } = await f.c.http.post('/v1/tasks').set('authorization', bearer(f.operator)).send({ packageId: pkg.body.id, action: 'install', targets: { deviceIds: [device.deviceId] } }).expect(201)
  return { taskId: task.id, chunk: pkg.body.chunks?.[0] ?? (await f.c.services.packages.find(pkg.body.id))!.chunks[0] }
}

function selfReport (f: ApiFixture, device: EnrolledDevice, body: object): Promise<Answer> {
  return f.c.http.put('/v1/agents/self').set('authorization', bearer(device.credential)).send({ peerAddresses: [], ...body }) as unknown as Promise<Answer>
}

/** Opens an event stream on a real socket and resolves once its answer's head arrived (the stream stays open). */
async function openStream (port: number, token: string): Promise<{ status: number, request: ClientRequest, response: IncomingMessage }> {
  return await new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, path: '/v1/events', headers: { authorization: bearer(token) } }, response => { resolve({ status: response.statusCode ?? 0, request, response }) })
    request.on('error', reject)
    request.end()
  })
}

const apiCases: ApiCase[] = [
  {
    name: 'a device declaring itself its site\'s cache',
    status: 200,
    reason: '',
    prepare: async f => await taskOnlyFor(f, await enroll(f, 'pc-same-site')),
    send: async f => await selfReport(f, f.device, { siteCache: true }),
    check: async (f, _answer, { taskId }) => {
      const { body } = await f.c.http.get('/v1/agents/assignments').set('authorization', bearer(f.device.credential)).expect(200)
      if (body.prefetch.some((item: any) => item.taskId === taskId)) return 'the device was handed its site\'s task to prefetch'
      const view = (await f.c.http.get(`/v1/devices/${f.device.deviceId}`).set('authorization', bearer(f.viewer)).expect(200)).body
      if (view.siteCache === true || view.siteCacheOffered !== true) return `the device view says siteCache ${String(view.siteCache)}, offered ${String(view.siteCacheOffered)}`
    }
  },
  {
    name: 'a device fetching a chunk of a package it is not assigned',
    status: 403,
    reason: 'content-not-assigned',
    prepare: async f => await taskOnlyFor(f, await enroll(f, 'pc-owner')),
    send: async (f, { chunk }) => await f.c.http.get(`/v1/content/${chunk as string}`).set('authorization', bearer(f.device.credential)) as unknown as Answer
  },
  {
    name: 'enrolling with a token that presets a site, naming another site',
    status: 403,
    reason: 'enrollment-site-mismatch',
    prepare: async f => await enrollmentToken(f, { site: 'berlin' }),
    send: async (f, token) => await enrollWith(f, token, { site: 'paris' })
  },
  {
    name: 'enrolling with groups the token does not grant',
    status: 403,
    reason: 'enrollment-groups-not-granted',
    prepare: async f => await enrollmentToken(f, { groups: ['kiosk'] }),
    send: async (f, token) => await enrollWith(f, token, { groups: ['kiosk', 'domain-admins'] })
  },
  {
    name: 'enrolling with groups and a token that grants none',
    status: 403,
    reason: 'enrollment-groups-not-granted',
    prepare: async f => await enrollmentToken(f, {}),
    send: async (f, token) => await enrollWith(f, token, { groups: ['finance'] })
  },
  {
    name: 'a device reporting peer addresses of other hosts',
    status: 200,
    reason: '',
    prepare: async f => {
      await f.c.http.post('/v1/sites').set('authorization', bearer(f.operator)).send({ name: 'default' }).expect(201)
      await f.c.http.post('/v1/boundaries').set('authorization', bearer(f.operator)).send({ cidr: '10.20.0.0/16', site: 'default' }).expect(201)
      return await enroll(f, 'pc-peer')
    },
    send: async f => await selfReport(f, f.device, { peerAddresses: ['/ip4/127.0.0.1/tcp/8651', '/ip4/10.20.3.4/tcp/8651', '/ip4/192.0.2.80/tcp/22', '/dns4/intranet.example/tcp/443', '/ip4/0.0.0.0/tcp/8651', '/ip4/224.0.0.251/tcp/5353'] }),
    check: async (f, answer, peer) => {
      const refused = Object.fromEntries(answer.body.refusedAddresses.map((entry: any) => [entry.address, entry.reason]))
      const expected = { '/ip4/192.0.2.80/tcp/22': 'outside-device-network', '/dns4/intranet.example/tcp/443': 'not-an-ip-address', '/ip4/0.0.0.0/tcp/8651': 'unroutable-address', '/ip4/224.0.0.251/tcp/5353': 'unroutable-address' }
      if (JSON.stringify(refused) !== JSON.stringify(expected)) return `refused ${JSON.stringify(refused)}`
      const { body } = await f.c.http.get('/v1/agents/assignments').set('authorization', bearer(peer.credential)).expect(200)
      const handed = body.peers.find((entry: any) => entry.deviceId === f.device.deviceId)?.addresses
      if (JSON.stringify(handed) !== JSON.stringify(['/ip4/127.0.0.1/tcp/8651', '/ip4/10.20.3.4/tcp/8651'])) return `site peers are handed ${JSON.stringify(handed)}`
    }
  },
  {
    name: 'a device reporting more peer addresses than it has interfaces',
    status: 200,
    reason: '',
    send: async f => await selfReport(f, f.device, { peerAddresses: Array.from({ length: 20 }, (_, index) => `/ip4/127.0.0.${index + 1}/tcp/8651`) }),
    check: async (f, answer) => {
      if (answer.body.peerAddresses.length !== 8 || answer.body.refusedAddresses.length !== 12 || answer.body.refusedAddresses.some((entry: any) => entry.reason !== 'too-many-addresses')) return JSON.stringify(answer.body)
      const stored = await f.c.services.store.collections.devices.get(f.device.deviceId)
      if (stored?.peerAddresses?.length !== 8) return `stored ${String(stored?.peerAddresses?.length)} addresses`
    }
  },
  {
    name: 'TRACE on an API path',
    status: 405,
    reason: 'method-not-allowed',
    send: async f => await (f.c.http as any).trace('/v1/tasks').set('authorization', bearer(f.operator)),
    check: (_f, answer) => String(answer.headers.allow).split(', ').sort().join() === 'GET,HEAD,POST' ? undefined : `Allow: ${String(answer.headers.allow)}`
  },
  {
    name: 'PROPFIND on an API path',
    status: 405,
    reason: 'method-not-allowed',
    send: async f => await (f.c.http as any).propfind(`/v1/packages/${f.packageId}`).set('authorization', bearer(f.operator))
  },
  {
    name: 'a device asking for a package that exists but is not approved for self-service',
    status: 404,
    reason: 'not-found',
    send: async f => await f.c.http.post('/v1/agents/requests').set('authorization', bearer(f.device.credential)).send({ package: 'tool' }) as unknown as Answer,
    check: async (f, answer) => {
      // The same answer as for a package that does not exist: the device cannot tell them apart.
      const unknown = await f.c.http.post('/v1/agents/requests').set('authorization', bearer(f.device.credential)).send({ package: 'toolz' })
      if (unknown.status !== answer.status || unknown.body.reason !== answer.body.reason || unknown.body.detail.replace('toolz', 'tool') !== answer.body.detail) return `${JSON.stringify(unknown.body)} against ${JSON.stringify(answer.body)}`
    }
  },
  {
    name: 'enrolling with a host name that holds terminal escapes',
    status: 400,
    reason: 'control-characters',
    prepare: async f => await enrollmentToken(f, {}),
    send: async (f, token) => await enrollWith(f, token, { hostname: 'pc-\u001b[2J\u001b[31mlaptop' }),
    check: (_f, answer) => answer.body.errors?.[0]?.path === 'hostname' ? undefined : JSON.stringify(answer.body)
  },
  {
    name: 'enrolling with a host name that holds a line break (a forged table row)',
    status: 400,
    reason: 'control-characters',
    prepare: async f => await enrollmentToken(f, {}),
    send: async (f, token) => await enrollWith(f, token, { hostname: 'pc-a\r\npc-b  default  -  linux/x64  active' }),
    check: (_f, answer) => answer.body.errors?.[0]?.path === 'hostname' ? undefined : JSON.stringify(answer.body)
  },
  {
    name: 'a package whose version holds a NUL',
    status: 400,
    reason: 'control-characters',
    send: async f => await f.c.http.post('/v1/packages').set('authorization', bearer(f.operator))
      .field('metadata', JSON.stringify({ name: 'nul', version: '1.0\u0000' })).attach('file', Buffer.from('#!/bin/sh\n'), 'nul.sh') as unknown as Answer
  },
  {
    name: 'a package name with a right-to-left override',
    status: 400,
    reason: 'control-characters',
    send: async f => await f.c.http.post('/v1/packages').set('authorization', bearer(f.operator))
      .field('metadata', JSON.stringify({ name: 'invoice\u202egpj.sh', version: '1' })).attach('file', Buffer.from('#!/bin/sh\n'), 'rlo.sh') as unknown as Answer
  },
  {
    name: 'a file distribution whose destination holds a NUL',
    status: 400,
    reason: 'control-characters',
    send: async f => await f.c.http.post('/v1/tasks').set('authorization', bearer(f.operator))
      .send({ packageId: f.packageId, action: 'distribute-files', destination: '/opt/tool\u0000/bin', targets: { all: true } }) as unknown as Answer
  },
  {
    name: 'a device moved to a site whose name holds an escape sequence',
    status: 400,
    reason: 'control-characters',
    send: async f => await f.c.http.patch(`/v1/devices/${f.device.deviceId}`).set('authorization', bearer(f.operator)).send({ site: 'berlin\u001b]0;pwned\u0007' }) as unknown as Answer
  },
  {
    name: 'a ninth event stream held open by one operator token',
    status: 429,
    reason: 'too-many-event-streams',
    prepare: async f => {
      const { port } = await f.listen()
      const streams = []
      for (let index = 0; index < 8; index++) streams.push(await openStream(port, f.viewer))
      if (streams.some(stream => stream.status !== 200)) throw new Error('the first eight streams were refused')
      return { port, streams }
    },
    send: async (f, { port }) => {
      // Over the socket: were it accepted, the stream would stay open.
      const { status, request, response } = await openStream(port, f.viewer)
      if (status === 200) {
        request.destroy()
        return { status, body: {}, headers: response.headers, type: String(response.headers['content-type']) }
      }
      const parts: Buffer[] = []
      for await (const part of response) parts.push(part as Buffer)
      return { status, body: JSON.parse(Buffer.concat(parts).toString('utf8')), headers: response.headers, type: String(response.headers['content-type']).split(';')[0] }
    },
    check: async (f, answer, { port, streams }) => {
      if (answer.headers['retry-after'] === undefined) return 'no Retry-After'
      // Another token is not held back; the token gets a stream again once it closed one.
      const other = await openStream(port, f.operator)
      other.request.destroy()
      if (other.status !== 200) return `another token got ${other.status}`
      streams[0].request.destroy()
      for (let attempt = 0; attempt < 100; attempt++) {
        const again = await openStream(port, f.viewer)
        again.request.destroy()
        if (again.status === 200) return undefined
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      return 'no stream after one was closed'
    }
  }
]

for (const [index, kase] of apiCases.entries()) {
  test(`trust case ${statusCases.length + index + 1}: ${kase.name} → ${kase.status} ${kase.reason}`.trimEnd(), async t => {
    const f = await openApiFixture()
    try {
      const prepared = await kase.prepare?.(f)
      const before = await snapshot(f.c)
      const answer = await kase.send(f, prepared)
      t.is(answer.status, kase.status, JSON.stringify(answer.body))
      if (kase.reason !== '') {
        t.is(answer.type, 'application/problem+json')
        t.is(answer.body.reason, kase.reason, answer.body.detail)
        t.is(typeof answer.body.detail, 'string')
      }
      t.deepEqual(await snapshot(f.c), before, 'nothing changed')
      t.is(await kase.check?.(f, answer, prepared), undefined)
    } finally {
      await f.close()
    }
  })
}

test(`trust case ${statusCases.length + apiCases.length + 1}: what devices and people wrote is shown escaped by the CLI: no escape sequence reaches the terminal, no line break forges a row`, async t => {
  const f = await openApiFixture()
  try {
    const hostile = '\u001b[2J\u001b[31mpwned\r\npc-forged  default  -  linux/x64  active  yes'
    // A device's own status message is free text it signs: the coordinator keeps it as written.
    const answer = await postStatus(f, f.device, [signed(f, f.device, { message: hostile })])
    t.is(answer.body.acknowledged.length, 1, JSON.stringify(answer.body))
    // Names stored before the API refused control characters in them.
    const store = f.c.services.store
    const device = (await store.collections.devices.get(f.device.deviceId))!
    await store.write([{ type: 'put', collection: 'devices', key: device.id, value: { ...device, hostname: `pc-${hostile}` } }])
    const pkg = (await store.collections.packages.get(f.packageId))!
    await store.write([{ type: 'put', collection: 'packages', key: pkg.id, value: { ...pkg, name: `tool\u009b31m${hostile}` } }])
    const { port } = await f.listen()
    const env = { MESHDEPLOY_URL: `http://127.0.0.1:${port}`, MESHDEPLOY_TOKEN: f.viewer }
    const views = [['device', 'list'], ['device', 'show', f.device.deviceId], ['task', 'history', f.taskId, f.device.deviceId], ['task', 'show', f.taskId], ['package', 'list'], ['task', 'history', f.taskId, f.device.deviceId, '--json']]
    const shown = await Promise.all(views.map(async args => await runCli(args, env)))
    for (const [index, args] of views.entries()) {
      const { code, stdout, stderr } = shown[index]
      t.is(code, 0, `${args.join(' ')}: ${stderr}`)
      // eslint-disable-next-line no-control-regex
      t.false(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(stdout), `${args.join(' ')} wrote a control character: ${JSON.stringify(stdout)}`)
      t.false(stdout.split('\n').some(line => line.startsWith('pc-forged')), `${args.join(' ')} printed a forged row`)
    }
    t.regex(shown[0].stdout, /pc-\\x1b\[2J\\x1b\[31mpwned\\r\\npc-forged/, 'the host name is shown, escaped, on its own row')
    t.is(shown[0].stdout.trimEnd().split('\n').length, 1 + (await f.c.services.devices.list()).length)
    t.regex(shown[4].stdout, /tool\\x9b31m\\x1b\[2J/, 'the package name is shown escaped')
    t.is(JSON.parse(shown[5].stdout)[0].message, hostile, 'JSON output keeps the text as it was written')
  } finally {
    await f.close()
  }
})

test(`trust case ${statusCases.length + apiCases.length + 2}: the site-cache role a device offered is granted and withdrawn by an operator with the CLI; only then is it handed its site's packages and served their chunks`, async t => {
  const f = await openApiFixture()
  try {
    const { taskId, chunk } = await taskOnlyFor(f, await enroll(f, 'pc-same-site'))
    await selfReport(f, f.device, { siteCache: true })
    const prefetched = async (): Promise<boolean> => (await f.c.http.get('/v1/agents/assignments').set('authorization', bearer(f.device.credential)).expect(200)).body.prefetch.some((item: any) => item.taskId === taskId)
    const fetchChunk = async (): Promise<number> => (await f.c.http.get(`/v1/content/${chunk}`).set('authorization', bearer(f.device.credential))).status
    t.false(await prefetched())
    t.is(await fetchChunk(), 403)
    const { port } = await f.listen()
    const env = { MESHDEPLOY_URL: `http://127.0.0.1:${port}`, MESHDEPLOY_TOKEN: f.operator }
    const offered = await runCli(['device', 'show', f.device.deviceId], env)
    t.regex(offered.stdout, /offers to be its site's cache; not granted/)
    const granted = await runCli(['device', 'edit', f.device.deviceId, '--site-cache'], env)
    t.is(granted.code, 0, granted.stderr)
    t.regex(granted.stdout, /site cache \(granted by ops\)/)
    const view = (await f.c.http.get(`/v1/devices/${f.device.deviceId}`).set('authorization', bearer(f.viewer)).expect(200)).body
    t.like(view, { siteCache: true, siteCacheOffered: true })
    t.truthy(view.siteCacheGrantedAt)
    t.true(await prefetched(), 'a granted site cache is handed its site\'s task to prefetch')
    t.is(await fetchChunk(), 200, 'and served its chunks')
    const withdrawn = await runCli(['device', 'edit', f.device.deviceId, '--no-site-cache', '--json'], env)
    t.is(withdrawn.code, 0, withdrawn.stderr)
    t.is(JSON.parse(withdrawn.stdout).siteCache, undefined)
    t.false(await prefetched())
    // A viewer may look but not grant.
    const refused = await runCli(['device', 'edit', f.device.deviceId, '--site-cache'], { ...env, MESHDEPLOY_TOKEN: f.viewer })
    t.is(refused.code, 3, refused.stdout)
  } finally {
    await f.close()
  }
})

test(`trust case ${statusCases.length + apiCases.length + 3}: two agents with one credential sign different records under the same sequence numbers → each is taken once, and the device is flagged for a shared credential`, async t => {
  const f = await openApiFixture()
  try {
    const first = [1, 2, 3].map(seq => signed(f, f.device, { seq, state: 'downloading', bytesDone: seq }))
    const t1 = await postStatus(f, f.device, first)
    t.is(t1.body.acknowledged.length, 3)
    // The same records again (a resend after a lost answer): duplicates, no sign of a copy.
    await postStatus(f, f.device, first)
    t.is((await f.c.services.devices.get(f.device.deviceId)).sharedCredential, undefined)
    // The copy's own records: the same keys, other contents.
    const copy = [1, 2, 3].map(seq => signed(f, f.device, { seq, state: 'failed', message: 'from the copy' }))
    const t2 = await postStatus(f, f.device, copy)
    t.is(t2.status, 200)
    t.is(t2.body.acknowledged.length, 3, 'acknowledged as already stored: the copy keeps no outbox growing')
    t.deepEqual((await storedSeqs(f, f.taskId, f.device)), [1, 2, 3])
    const history = (await f.c.http.get(`/v1/tasks/${f.taskId}/devices/${f.device.deviceId}/history`).set('authorization', bearer(f.viewer)).expect(200)).body.records
    t.true(history.every((record: StatusRecord) => record.state === 'downloading'), 'the records stored first stay')
    const flagged = await (async () => {
      for (let attempt = 0; attempt < 100; attempt++) {
        const device = await f.c.services.devices.get(f.device.deviceId)
        if (device.sharedCredential !== undefined) return device.sharedCredential
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      return undefined
    })()
    t.like(flagged, { evidence: ['conflicting-status-records'] })
    const view = (await f.c.http.get(`/v1/devices/${f.device.deviceId}`).set('authorization', bearer(f.viewer)).expect(200)).body
    t.deepEqual(view.sharedCredential.evidence, ['conflicting-status-records'])
    const cleared = await f.c.http.patch(`/v1/devices/${f.device.deviceId}`).set('authorization', bearer(f.operator)).send({ clearSharedCredential: true }).expect(200)
    t.is(cleared.body.sharedCredential, undefined)
  } finally {
    await f.close()
  }
})
