/**
 * Property-based fuzzing of the status-record checks. Each run sends one
 * record with arbitrary values in any of its fields, signed by its device,
 * in a relay's batch beside good records of three other devices: the batch
 * is answered (never a 500), the fuzzed record is either stored and within
 * every bound or refused with a reason, and every good record is stored.
 */
import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'
import {
  DEVICE_TASK_STATES, MAX_CLOCK_SKEW_MS, STATUS_DOMAIN, sealEnvelope, signStatusRecord, statusRecordSchema, utf8, type StatusRecord
} from '../../protocol/index.js'
import { ImplausibleRecordError, checkRecordBounds, type RecordBoundsContext } from '../../coordinator/agents/status-bounds.js'
import { statusLogKey } from '../../coordinator/agents/statuses.js'
import { enrollDevice, type EnrolledDevice } from '../helpers/coordinator.js'
import { openApiFixture } from './api-fixture.js'

const RUNS = 150

/** Values a field may be fuzzed with: edge numbers, wrong types, anything. */
const edgeNumbers = fc.constantFrom(0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, -(2 ** 53) + 1, 8.64e15, 8.64e15 + 1, 1e300, -1e300, 0.5, -0)
const anyValue = fc.oneof(edgeNumbers, fc.integer(), fc.double({ noNaN: true }), fc.string({ maxLength: 50 }), fc.boolean(), fc.constant(null), fc.anything({ maxDepth: 2 }))

const FIELDS = ['type', 'deviceId', 'taskId', 'revision', 'attempt', 'seq', 'state', 'at', 'bytesTotal', 'bytesDone', 'bytesFromPeers', 'bytesFromOrigin', 'exitCode', 'message', 'retryAt', 'windowAt', 'final'] as const

/** A field's plausible values near the valid ones, so that the bounds (not only the schema) are reached. */
function nearValues (field: typeof FIELDS[number], nowMs: number): fc.Arbitrary<unknown> {
  switch (field) {
    case 'state': return fc.constantFrom(...DEVICE_TASK_STATES)
    case 'at':
    case 'retryAt':
    case 'windowAt': return fc.integer({ min: -2 * 24 * 3600_000, max: 2 * 24 * 3600_000 }).map(offset => nowMs + offset)
    case 'revision':
    case 'attempt': return fc.integer({ min: 0, max: 1002 })
    case 'seq': return fc.oneof(fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 999_999_000, max: 1_000_001_000 }))
    case 'exitCode': return fc.oneof(fc.integer({ min: -(2 ** 31) - 2, max: 2 ** 31 }), fc.constantFrom(2 ** 32 - 1, 2 ** 32, 3010, 1618))
    case 'final': return fc.boolean()
    case 'message': return fc.string({ maxLength: 4100 })
    default: return fc.integer({ min: 0, max: 10_000 })
  }
}

type Mutation = { field: typeof FIELDS[number], value: unknown, remove: boolean }

function mutations (nowMs: number): fc.Arbitrary<Mutation[]> {
  const one = fc.constantFrom(...FIELDS).chain(field => fc.record({
    field: fc.constant(field),
    value: fc.oneof(nearValues(field, nowMs), anyValue),
    remove: fc.integer({ min: 0, max: 4 }).map(roll => roll === 0)
  }))
  return fc.array(one, { minLength: 1, maxLength: 4 })
}

async function check<T> (t: ExecutionContext, property: fc.IAsyncProperty<T>, parameters?: fc.Parameters<T>): Promise<void> {
  await t.notThrowsAsync(fc.assert(property, parameters), 'a counterexample to the property')
}

test('fuzzed status records beside good ones: the batch is always answered, the fuzzed one stored only within its bounds, every good one stored', async t => {
  const f = await openApiFixture()
  try {
    const relay = f.device
    const good: EnrolledDevice[] = []
    for (const hostname of ['pc-1', 'pc-2', 'pc-3']) good.push(await enrollDevice(f.c, { hostname }))
    const fuzzed = await enrollDevice(f.c, { hostname: 'pc-fuzzed' })
    await f.c.services.scheduler.tick()
    const task = (await f.c.http.get(`/v1/tasks/${f.taskId}`).set('authorization', `Bearer ${f.viewer}`).expect(200)).body
    const packageBytes = task.package.sizeBytes
    const context: RecordBoundsContext = { nowMs: f.clock.now(), taskRevision: task.revision, taskCreatedMs: Date.parse(task.createdAt), packageBytes }
    let seq = 0
    const base = (device: EnrolledDevice, at: number): StatusRecord => ({
      type: 'meshdeploy.status', deviceId: device.deviceId, taskId: f.taskId, revision: 1, attempt: 1, seq: ++seq, state: 'downloading', at,
      bytesTotal: packageBytes, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0
    })
    await check(t, fc.asyncProperty(mutations(f.clock.now()), fc.integer({ min: 0, max: 3 }), async (changes, position) => {
      const now = f.clock.now()
      const record: Record<string, unknown> = { ...base(fuzzed, now) }
      for (const change of changes) {
        if (change.remove) delete record[change.field]
        else record[change.field] = change.value
      }
      const goodRecords = good.map(device => base(device, now))
      const envelopes: unknown[] = goodRecords.map((goodRecord, index) => signStatusRecord(goodRecord, good[index].key))
      envelopes.splice(position, 0, sealEnvelope(STATUS_DOMAIN, utf8(JSON.stringify(record)), fuzzed.key))
      const answer = await f.c.http.post('/v1/agents/status').set('authorization', `Bearer ${relay.credential}`).send({ records: envelopes })
      if (answer.status !== 200) throw new Error(`answered ${answer.status}: ${JSON.stringify(answer.body)}`)
      const refused = answer.body.rejected as Array<{ index: number, reason: string, message: string }>
      if (refused.some(rejection => rejection.index !== position)) throw new Error(`a good record was refused: ${JSON.stringify(refused)}`)
      for (const rejection of refused) if (typeof rejection.reason !== 'string' || rejection.reason === '' || typeof rejection.message !== 'string') throw new Error(`a refusal without a reason: ${JSON.stringify(rejection)}`)
      const stored = await f.c.services.store.collections.statusLog.getMany(goodRecords.map(goodRecord => statusLogKey(goodRecord)))
      if (stored.some(entry => entry === undefined)) throw new Error('a good record was not stored')
      if (refused.length === 0) {
        // Stored: the record must be one an honest agent could have sent.
        const parsed = statusRecordSchema.parse(record)
        checkRecordBounds(parsed, { ...context, nowMs: now })
        if (parsed.deviceId !== fuzzed.deviceId || parsed.taskId !== f.taskId) throw new Error('a record of another device or task was stored')
      }
    }), { numRuns: RUNS })
  } finally {
    await f.close()
  }
})

test('the bounds check throws only its named error, and whatever it accepts has a representable time', t => {
  const nowMs = Date.parse('2026-11-21T12:00:00Z')
  const context: RecordBoundsContext = { nowMs, taskRevision: 3, taskCreatedMs: nowMs - 24 * 3600_000, packageBytes: 1 << 20 }
  const record = fc.record({
    type: fc.constant('meshdeploy.status' as const),
    deviceId: fc.constant('dev-1'),
    taskId: fc.constant('task-1'),
    revision: fc.oneof(fc.integer({ min: 1, max: 5 }), fc.constant(Number.MAX_SAFE_INTEGER)),
    attempt: fc.integer({ min: 1, max: 1000 }),
    seq: fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })),
    state: fc.constantFrom(...DEVICE_TASK_STATES),
    at: fc.oneof(fc.integer({ min: nowMs - 3 * 24 * 3600_000, max: nowMs + 3 * 3600_000 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
    bytesTotal: fc.oneof(fc.integer({ min: 0, max: 1 << 21 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
    bytesDone: fc.integer({ min: 0, max: 1 << 21 }),
    bytesFromPeers: fc.oneof(fc.integer({ min: 0, max: 1 << 22 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
    bytesFromOrigin: fc.integer({ min: 0, max: 1 << 22 }),
    exitCode: fc.option(fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), { nil: undefined }),
    retryAt: fc.option(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), { nil: undefined }),
    windowAt: fc.option(fc.oneof(fc.integer({ min: nowMs, max: nowMs + 30 * 24 * 3600_000 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })), { nil: undefined }),
    final: fc.option(fc.boolean(), { nil: undefined })
  }, { requiredKeys: ['type', 'deviceId', 'taskId', 'revision', 'attempt', 'seq', 'state', 'at', 'bytesTotal', 'bytesDone', 'bytesFromPeers', 'bytesFromOrigin'] })
  t.notThrows(() => {
    fc.assert(fc.property(record, candidate => {
      try {
        checkRecordBounds(candidate as StatusRecord, context)
      } catch (error) {
        if (!(error instanceof ImplausibleRecordError) || error.reason === '') throw error
        return
      }
      // Accepted: every time in it is a date within the skew of now, and nothing is beyond the task.
      new Date(candidate.at).toISOString()
      if (candidate.retryAt !== undefined) new Date(candidate.retryAt).toISOString()
      if (candidate.windowAt !== undefined) new Date(candidate.windowAt).toISOString()
      if (candidate.at > nowMs + MAX_CLOCK_SKEW_MS || candidate.revision > context.taskRevision || candidate.state === 'pending') throw new Error(`accepted ${JSON.stringify(candidate)}`)
      if (candidate.bytesDone > candidate.bytesTotal || candidate.bytesTotal > context.packageBytes) throw new Error(`accepted ${JSON.stringify(candidate)}`)
    }), { numRuns: 2000 })
  })
})
