/**
 * Bad input, API: each case sends one refused request (or a flood, or a
 * slow client) to a coordinator that has tokens of every role, devices in
 * every status, a package and a task, and asserts the status, the
 * problem+json reason, and that the store, the chunk store, the tokens and
 * the audit log are exactly as they were.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, signStatusRecord, toHex, type StatusRecord } from '../../protocol/index.js'
import type { HttpLimitsInit } from '../../coordinator/http/request-limits.js'
import { openApiFixture, snapshot, type ApiFixture } from './api-fixture.js'
import { rawExchange } from './raw-http.js'

interface Answer {
  status: number
  body: any
  headers: Record<string, string | string[] | undefined>
  type: string
}

interface ApiCase {
  name: string
  status: number
  /** The problem+json reason; `null` where the answer is not the app's (Node's own 408 for slow headers). */
  reason: string | null
  limits?: HttpLimitsInit
  maxPackageBytes?: number
  /** State the case needs, made before the snapshot. */
  prepare?: (f: ApiFixture) => Promise<any>
  send: (f: ApiFixture, prepared: any) => Promise<Answer>
  /** Further checks on the answer and the coordinator. */
  check?: (f: ApiFixture, answer: Answer) => Promise<string | undefined> | string | undefined
}

const bearer = (token: string): string => `Bearer ${token}`

function upload (f: ApiFixture, token: string, file: Buffer, fileName = 'tool2.sh', metadata: object = { name: 'tool', version: '2' }) {
  return f.c.http.post('/v1/packages').set('authorization', bearer(token)).field('metadata', JSON.stringify(metadata)).attach('file', file, fileName)
}

function createTask (f: ApiFixture, token: string, body: object = { packageId: f.packageId, action: 'install', targets: { all: true } }) {
  return f.c.http.post('/v1/tasks').set('authorization', bearer(token)).send(body)
}

function enroll (f: ApiFixture, token: string, publicKey = toHex(generateKeyPair().publicKey)) {
  return f.c.http.post('/v1/agents/enroll').send({ token, publicKey, hostname: 'newcomer', platform: 'linux', arch: 'x64' })
}

async function enrollmentToken (f: ApiFixture, fields: object = {}): Promise<{ id: string, token: string }> {
  return (await f.c.http.post('/v1/enrollment-tokens').set('authorization', bearer(f.operator)).send(fields).expect(201)).body
}

function statusRecord (f: ApiFixture, deviceId: string, seq = 1): StatusRecord {
  return { type: 'meshdeploy.status', deviceId, taskId: f.taskId, revision: 1, attempt: 1, seq, state: 'downloading', at: f.clock.now(), bytesTotal: 10, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0 }
}

/** A multipart body of the given parts, for uploads no client library would build. */
function multipart (boundary: string, parts: Array<{ name: string, fileName?: string, content: string | Buffer }>, end = true): Buffer {
  const pieces: Buffer[] = []
  for (const part of parts) {
    const disposition = `form-data; name="${part.name}"${part.fileName !== undefined ? `; filename="${part.fileName}"` : ''}`
    pieces.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n`), Buffer.from(part.content), Buffer.from('\r\n'))
  }
  if (end) pieces.push(Buffer.from(`--${boundary}--\r\n`))
  return Buffer.concat(pieces)
}

const SLOW: HttpLimitsInit = { headersTimeoutMs: 300, bodyIdleTimeoutMs: 300, jsonBodyTimeoutMs: 2000 }

const cases: ApiCase[] = [
  // Who may call
  { name: 'no token', status: 401, reason: 'unauthorized', send: async f => await f.c.http.post('/v1/tasks').send({}) },
  { name: 'an Authorization header that is not a bearer token', status: 401, reason: 'unauthorized', send: async f => await f.c.http.get('/v1/packages').set('authorization', `Basic ${Buffer.from('admin:admin').toString('base64')}`) },
  { name: 'a token that was never issued', status: 401, reason: 'unauthorized', send: async f => await createTask(f, 'mdo_' + randomBytes(24).toString('base64url')) },
  { name: 'a revoked token', status: 401, reason: 'token-revoked', send: async f => await createTask(f, f.revoked) },
  { name: 'an expired token', status: 401, reason: 'token-expired', send: async f => await f.c.http.get('/v1/tasks').set('authorization', bearer(f.expired)) },
  { name: 'a viewer creating a task', status: 403, reason: 'forbidden', send: async f => await createTask(f, f.viewer) },
  { name: 'a viewer deleting a package', status: 403, reason: 'forbidden', send: async f => await f.c.http.delete(`/v1/packages/${f.packageId}`).set('authorization', bearer(f.viewer)) },
  { name: 'a viewer uploading a package', status: 403, reason: 'forbidden', send: async f => await upload(f, f.viewer, randomBytes(1000)) },
  { name: 'an operator creating an admin token', status: 403, reason: 'forbidden', send: async f => await f.c.http.post('/v1/tokens').set('authorization', bearer(f.operator)).send({ name: 'me-too', role: 'admin' }) },
  { name: 'an operator rotating the signing key', status: 403, reason: 'forbidden', send: async f => await f.c.http.post('/v1/keys/rotate').set('authorization', bearer(f.operator)) },
  { name: 'an operator reading the audit log', status: 403, reason: 'forbidden', send: async f => await f.c.http.get('/v1/audit').set('authorization', bearer(f.operator)) },
  { name: 'a device credential on an operator route', status: 403, reason: 'forbidden', send: async f => await createTask(f, f.device.credential) },
  { name: 'an operator token on a device route', status: 403, reason: 'forbidden', send: async f => await f.c.http.post('/v1/agents/status').set('authorization', bearer(f.admin)).send({ records: [signStatusRecord(statusRecord(f, f.device.deviceId), f.device.key)] }) },
  { name: 'a blocked device\'s credential', status: 401, reason: 'device-blocked', send: async f => await f.c.http.get('/v1/agents/assignments').set('authorization', bearer(f.blocked.credential)) },
  { name: 'a retired device\'s credential', status: 401, reason: 'device-retired', send: async f => await f.c.http.post('/v1/agents/status').set('authorization', bearer(f.retired.credential)).send({ records: [signStatusRecord(statusRecord(f, f.retired.deviceId), f.retired.key)] }) },
  {
    name: 'revoking the last admin token',
    status: 409,
    reason: 'last-admin-token',
    send: async f => {
      const { body } = await f.c.http.get('/v1/tokens').set('authorization', bearer(f.admin))
      return await f.c.http.post(`/v1/tokens/${body.tokens.find((t: any) => t.role === 'admin').id}/revoke`).set('authorization', bearer(f.admin))
    }
  },
  { name: 'unblocking a retired device', status: 409, reason: 'device-retired', send: async f => await f.c.http.post(`/v1/devices/${f.retired.deviceId}/unblock`).set('authorization', bearer(f.operator)) },
  // Enrollment
  {
    name: 'enrolling with an expired enrollment token',
    status: 401,
    reason: 'enrollment-token-expired',
    prepare: async f => { const { token } = await enrollmentToken(f, { expiresInSeconds: 60 }); f.clock.advance(61_000); return token },
    send: async (f, token) => await enroll(f, token)
  },
  {
    name: 'enrolling with a used-up enrollment token',
    status: 401,
    reason: 'enrollment-token-used-up',
    prepare: async f => { const { token } = await enrollmentToken(f, { maxUses: 1 }); await enroll(f, token).expect(201); return token },
    send: async (f, token) => await enroll(f, token)
  },
  {
    name: 'enrolling with a revoked enrollment token',
    status: 401,
    reason: 'enrollment-token-revoked',
    prepare: async f => {
      const { id, token } = await enrollmentToken(f)
      await f.c.http.post(`/v1/enrollment-tokens/${id}/revoke`).set('authorization', bearer(f.operator)).expect(200)
      return token
    },
    send: async (f, token) => await enroll(f, token)
  },
  { name: 'a blocked device enrolling again with its key', status: 409, reason: 'device-key-blocked', prepare: async f => (await enrollmentToken(f)).token, send: async (f, token) => await enroll(f, token, toHex(f.blocked.key.publicKey)) },
  { name: 'a retired device enrolling again with its key', status: 409, reason: 'device-key-retired', prepare: async f => (await enrollmentToken(f)).token, send: async (f, token) => await enroll(f, token, toHex(f.retired.key.publicKey)) },
  // Uploads
  { name: 'an upload over the size limit', status: 413, reason: 'payload-too-large', send: async f => await upload(f, f.operator, randomBytes(300_000)) },
  {
    name: 'an upload whose Content-Length is over the limit',
    status: 413,
    reason: 'payload-too-large',
    send: async f => await f.c.http.post('/v1/packages').set('authorization', bearer(f.operator)).set('content-type', 'multipart/form-data; boundary=x').set('content-length', String(50 * 1024 * 1024)).send('--x--')
  },
  { name: 'an upload with two file parts', status: 400, reason: 'too-many-parts', send: async f => await upload(f, f.operator, randomBytes(1000)).attach('file', randomBytes(1000), 'b.sh') },
  {
    name: 'an upload with too many fields',
    status: 400,
    reason: 'too-many-parts',
    send: async f => {
      let request = f.c.http.post('/v1/packages').set('authorization', bearer(f.operator))
      for (let index = 0; index < 6; index++) request = request.field('metadata', JSON.stringify({ name: 'tool', version: String(index + 2) }))
      return await request.attach('file', randomBytes(1000), 'a.sh')
    }
  },
  { name: 'an upload with an unexpected field', status: 400, reason: 'invalid-request', send: async f => await f.c.http.post('/v1/packages').set('authorization', bearer(f.operator)).field('path', '/etc/passwd').field('metadata', JSON.stringify({ name: 'a', version: '2' })).attach('file', randomBytes(1000), 'a.sh') },
  { name: 'an upload whose metadata field is over 64 KiB', status: 413, reason: 'payload-too-large', send: async f => await upload(f, f.operator, randomBytes(1000), 'a.sh', { name: 'tool', version: '2', description: 'x'.repeat(70_000) }) },
  { name: 'an upload with unknown metadata fields', status: 400, reason: 'invalid-request', send: async f => await upload(f, f.operator, randomBytes(1000), 'a.sh', { name: 'tool', version: '2', installAs: 'root' }) },
  { name: 'an upload without a file part', status: 400, reason: 'invalid-request', send: async f => await f.c.http.post('/v1/packages').set('authorization', bearer(f.operator)).field('metadata', JSON.stringify({ name: 'a', version: '2' })) },
  { name: 'an upload whose file name holds a NUL byte', status: 400, reason: 'invalid-request', send: async f => await upload(f, f.operator, randomBytes(1000), 'tool.sh\u0000.exe') },
  { name: 'an upload that is not multipart', status: 415, reason: 'unsupported-media-type', send: async f => await f.c.http.post('/v1/packages').set('authorization', bearer(f.operator)).set('content-type', 'application/octet-stream').send(randomBytes(1000)) },
  // JSON bodies
  { name: 'malformed JSON', status: 400, reason: 'invalid-json', send: async f => await f.c.http.post('/v1/tasks').set('authorization', bearer(f.operator)).set('content-type', 'application/json').send('{"packageId": ') },
  { name: 'JSON nested 100 levels deep', status: 400, reason: 'too-deep', send: async f => await f.c.http.post('/v1/tasks').set('authorization', bearer(f.operator)).set('content-type', 'application/json').send('{"a":'.repeat(100) + '1' + '}'.repeat(100)) },
  {
    name: 'wrong types',
    status: 400,
    reason: 'invalid-request',
    send: async f => await createTask(f, f.operator, { packageId: 5, action: 'install', targets: { all: 'yes' } }),
    check: (_f, answer) => answer.body.errors.map((error: any) => error.path).join(',') === 'packageId,targets.all' ? undefined : `field errors: ${JSON.stringify(answer.body.errors)}`
  },
  { name: 'unknown fields', status: 400, reason: 'invalid-request', send: async f => await createTask(f, f.operator, { packageId: f.packageId, action: 'install', targets: { all: true }, runAsUser: 'root' }) },
  { name: 'an empty body', status: 400, reason: 'invalid-request', send: async f => await f.c.http.post('/v1/tasks').set('authorization', bearer(f.operator)).set('content-type', 'application/json').send('') },
  { name: 'a body that is not JSON', status: 415, reason: 'unsupported-media-type', send: async f => await f.c.http.post('/v1/tasks').set('authorization', bearer(f.operator)).set('content-type', 'text/plain').send('install everything') },
  { name: 'a JSON body over 1 MiB', status: 413, reason: 'payload-too-large', send: async f => await createTask(f, f.operator, { packageId: f.packageId, action: 'install', targets: { all: true }, name: 'x'.repeat(1_100_000) }) },
  { name: 'a relative destination path', status: 400, reason: 'invalid-request', send: async f => await createTask(f, f.operator, { packageId: f.packageId, action: 'distribute-files', destination: '../../etc', targets: { all: true } }) },
  { name: 'a path parameter that tries to leave the chunk store', status: 400, reason: 'invalid-request', send: async f => await f.c.http.get('/v1/content/..%2F..%2Fsigning-key.json').set('authorization', bearer(f.device.credential)) },
  { name: 'a query value out of range', status: 400, reason: 'invalid-request', send: async f => await f.c.http.get('/v1/agents/assignments?waitSeconds=86400').set('authorization', bearer(f.device.credential)) },
  { name: 'an audit cursor not made by the log', status: 400, reason: 'invalid-request', send: async f => await f.c.http.get('/v1/audit?cursor=%00%00').set('authorization', bearer(f.admin)) },
  // Status records
  { name: 'a status batch over 1000 records', status: 400, reason: 'invalid-request', send: async f => await f.c.http.post('/v1/agents/status').set('authorization', bearer(f.device.credential)).send({ records: Array.from({ length: 1001 }, () => ({})) }) },
  {
    name: 'a status record signed by another device\'s key',
    status: 200,
    reason: null,
    send: async f => await f.c.http.post('/v1/agents/status').set('authorization', bearer(f.device.credential)).send({ records: [signStatusRecord(statusRecord(f, f.device.deviceId), generateKeyPair())] }),
    check: (_f, answer) => answer.body.rejected[0]?.reason === 'unknown-key' && answer.body.acknowledged.length === 0 ? undefined : JSON.stringify(answer.body)
  },
  {
    name: 'a blocked device\'s status record relayed by another device',
    status: 200,
    reason: null,
    send: async f => await f.c.http.post('/v1/agents/status').set('authorization', bearer(f.device.credential)).send({ records: [signStatusRecord(statusRecord(f, f.blocked.deviceId), f.blocked.key)] }),
    check: (_f, answer) => answer.body.rejected[0]?.reason === 'device-inactive' ? undefined : JSON.stringify(answer.body)
  },
  // Floods
  {
    name: 'a request flood from one operator token',
    status: 429,
    reason: 'rate-limited',
    limits: { operatorRate: { requestsPerSecond: 2, burst: 5 } },
    send: async f => {
      for (let index = 0; index < 5; index++) await f.c.http.get('/v1/tasks').set('authorization', bearer(f.viewer)).expect(200)
      return await f.c.http.get('/v1/tasks').set('authorization', bearer(f.viewer))
    },
    check: async (f, answer) => {
      if (answer.headers['retry-after'] !== '1') return `Retry-After ${String(answer.headers['retry-after'])}`
      // Another token is not held back by this one's flood, and the flooder passes again once its bucket refills.
      if ((await f.c.http.get('/v1/tasks').set('authorization', bearer(f.operator))).status !== 200) return 'another token was held back'
      f.clock.advance(500)
      if ((await f.c.http.get('/v1/tasks').set('authorization', bearer(f.viewer))).status !== 200) return 'the flooder stayed blocked after Retry-After'
    }
  },
  {
    name: 'a flood of enrollment attempts from one address',
    status: 429,
    reason: 'rate-limited',
    limits: { anonymousRate: { requestsPerSecond: 1, burst: 20 } },
    send: async f => {
      let answer
      for (let index = 0; index < 25; index++) {
        answer = await f.c.http.post('/v1/agents/enroll').send({ token: 'mde_guess' + String(index), publicKey: 'a'.repeat(64), hostname: 'x', platform: 'linux', arch: 'x64' })
        if (answer.status === 429) return answer
      }
      return answer!
    }
  },
  {
    name: 'a flood of failed authentications from one address',
    status: 429,
    reason: 'rate-limited',
    limits: { anonymousRate: { requestsPerSecond: 1, burst: 10 } },
    send: async f => {
      for (let index = 0; index < 10; index++) await f.c.http.get('/v1/packages').set('authorization', bearer(`mdo_guess${index}`)).expect(401)
      return await f.c.http.get('/v1/packages').set('authorization', bearer('mdo_guess-again'))
    },
    check: async f => {
      // A valid credential from the same address (a device behind the same NAT) is not held back.
      const device = await f.c.http.get('/v1/agents/assignments').set('authorization', bearer(f.device.credential))
      return device.status === 200 ? undefined : `a valid device from the address got ${device.status}`
    }
  },
  {
    name: 'a request flood from one device',
    status: 429,
    reason: 'rate-limited',
    limits: { deviceRate: { requestsPerSecond: 10, burst: 10 } },
    send: async f => {
      for (let index = 0; index < 10; index++) await f.c.http.get('/v1/agents/assignments').set('authorization', bearer(f.device.credential)).expect(200)
      return await f.c.http.get('/v1/agents/assignments').set('authorization', bearer(f.device.credential))
    }
  },
  // Slow clients, over a real socket
  {
    name: 'request headers that never finish',
    status: 408,
    reason: null,
    limits: SLOW,
    send: async f => {
      const { port } = await f.listen()
      return await rawExchange(port, [`POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${f.operator}\r\n`])
    },
    check: (_f, answer) => (answer as any).closed === true ? undefined : 'the connection stayed open'
  },
  {
    name: 'a JSON body that stalls',
    status: 408,
    reason: 'body-timeout',
    limits: SLOW,
    send: async f => {
      const { port } = await f.listen()
      return await rawExchange(port, [`POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${f.operator}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"packageId":`])
    },
    check: (_f, answer) => (answer as any).closed === true ? undefined : 'the connection stayed open'
  },
  {
    name: 'a JSON body streamed past 1 MiB without a length',
    status: 413,
    reason: 'payload-too-large',
    send: async f => {
      const { port } = await f.listen()
      const piece = Buffer.alloc(64 * 1024, 0x20)
      const frames = Array.from({ length: 24 }, () => Buffer.concat([Buffer.from(`${piece.byteLength.toString(16)}\r\n`), piece, Buffer.from('\r\n')]))
      return await rawExchange(port, [`POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${f.operator}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`, ...frames])
    }
  },
  {
    name: 'an upload that stalls half way',
    status: 408,
    reason: 'body-timeout',
    limits: SLOW,
    send: async f => {
      const { port } = await f.listen()
      const body = multipart('b0undary', [{ name: 'metadata', content: JSON.stringify({ name: 'slow', version: '1' }) }, { name: 'file', fileName: 'slow.bin', content: randomBytes(150_000) }], false)
      return await rawExchange(port, [`POST /v1/packages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${f.operator}\r\nContent-Type: multipart/form-data; boundary=b0undary\r\nContent-Length: ${body.byteLength + 100_000}\r\n\r\n`, body])
    }
  }
]

/** Uploaded file names are labels: cases where the request succeeds but nothing lands outside the chunk store. */
const fileNameCases: Array<{ name: string, fileName: string, stored: string }> = [
  { name: 'a file name with ../', fileName: '../../../../tmp/meshdeploy-escape', stored: 'meshdeploy-escape' },
  { name: 'an absolute file name', fileName: '/tmp/meshdeploy-absolute', stored: 'meshdeploy-absolute' },
  { name: 'a Windows path with drive and backslashes', fileName: 'C:\\Windows\\System32\\evil.dll', stored: 'evil.dll' },
  { name: 'a file name whose last segment is ..', fileName: 'folder/..', stored: 'package' }
]

for (const [index, kase] of cases.entries()) {
  test(`api case ${index + 1}: ${kase.name} → ${kase.status} ${kase.reason ?? ''}`.trimEnd(), async t => {
    const f = await openApiFixture({ ...(kase.limits !== undefined ? { limits: kase.limits } : {}), ...(kase.maxPackageBytes !== undefined ? { maxPackageBytes: kase.maxPackageBytes } : {}) })
    try {
      const prepared = await kase.prepare?.(f)
      const before = await snapshot(f.c)
      const answer = await kase.send(f, prepared)
      t.is(answer.status, kase.status, JSON.stringify(answer.body))
      if (kase.reason !== null) {
        t.is(answer.type, 'application/problem+json')
        t.is(answer.body.reason, kase.reason, answer.body.detail)
        t.is(typeof answer.body.detail, 'string')
      }
      const problem = await kase.check?.(f, answer)
      t.is(problem, undefined)
      t.deepEqual(await snapshot(f.c), before, 'nothing changed')
    } finally {
      await f.close()
    }
  })
}

for (const [index, kase] of fileNameCases.entries()) {
  test(`api case ${cases.length + index + 1}: ${kase.name} → stored as a label only`, async t => {
    const f = await openApiFixture()
    try {
      const { body } = await upload(f, f.operator, randomBytes(2000), kase.fileName).expect(201)
      t.is(body.fileName, kase.stored)
      await t.throwsAsync(stat('/tmp/meshdeploy-escape'))
      await t.throwsAsync(stat('/tmp/meshdeploy-absolute'))
      await t.throwsAsync(stat(join(f.c.dataDir, '..', 'meshdeploy-escape')))
    } finally {
      await f.close()
    }
  })
}

