import test, { type ExecutionContext } from 'ava'
import { tempFolder } from '../helpers/temp.js'
import { join } from 'node:path'
import { generateKeyPair, openStatusRecord, trustKeys, type SignedEnvelope } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'
import { Outbox } from '../../agent/outbox.js'
import { AgentStore, type LocalTask } from '../../agent/state/store.js'
import type { CoordinatorClient, StatusAnswer } from '../../agent/coordinator-client.js'
import type { Identity } from '../../agent/identity.js'

/** A coordinator stand-in whose answers the test scripts. */
class ScriptedCoordinator {
  readonly received: SignedEnvelope[][] = []
  answer: (records: SignedEnvelope[]) => StatusAnswer = records => ({ acknowledged: records.map(keyOf), rejected: [], duplicates: 0 })
  async postStatus (records: SignedEnvelope[]): Promise<StatusAnswer> {
    this.received.push(records)
    return this.answer(records)
  }
}

const deviceKey = generateKeyPair()
function keyOf (envelope: SignedEnvelope): string {
  const { record } = openStatusRecord(envelope, trustKeys(deviceKey.publicKey))
  return `${record.deviceId}/${record.taskId}/${record.attempt}/${record.seq}`
}

async function setUp (t: ExecutionContext): Promise<{ store: AgentStore, outbox: Outbox, coordinator: ScriptedCoordinator, task: LocalTask }> {
  const dir = await tempFolder(t, 'md-outbox-')
  const store = await AgentStore.open(join(dir, 'db'), dir)
  const coordinator = new ScriptedCoordinator()
  const identity = { deviceId: 'dev-1', key: deviceKey } as unknown as Identity
  const outbox = new Outbox({ store, client: coordinator as unknown as CoordinatorClient, identity, logger: silentLogger(), minBackoffMs: 60_000 })
  const task: LocalTask = { taskId: 'task-1', revision: 1, state: 'pending', attempt: 1, failures: 0, seq: 0, bytesFromPeers: 0, bytesFromOrigin: 0, updatedAt: 0 }
  return { store, outbox, coordinator, task }
}

const fields = { bytesTotal: 10, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0 }

test('records are signed, numbered and saved with the task in one write', async t => {
  const { store, outbox, coordinator, task } = await setUp(t)
  coordinator.answer = () => { throw new Error('unreachable') }
  let current = await outbox.record(task, { ...fields, state: 'downloading' })
  current = await outbox.record(current, { ...fields, state: 'installing' })
  await outbox.flush()
  t.is(current.seq, 2)
  t.is((await store.getTask('task-1'))?.state, 'installing')
  const pending = await store.outboxBatch(10)
  t.deepEqual(pending.map(entry => entry.key), ['dev-1/task-1/1/1', 'dev-1/task-1/1/2'])
  await outbox.stop()
  await store.close()
})

test('records stay in the outbox until acknowledged, across a restart', async t => {
  const { store, outbox, coordinator, task } = await setUp(t)
  coordinator.answer = () => { throw new Error('the coordinator is down') }
  await outbox.record(task, { ...fields, state: 'downloading' })
  await outbox.flush()
  t.is(await store.outboxSize(), 1)
  await outbox.stop()
  const location = (store as any).db.location as string
  await store.close()
  const reopened = await AgentStore.open(location, location)
  t.is(await reopened.outboxSize(), 1, 'the record survived the restart')
  const again = new Outbox({ store: reopened, client: coordinator as unknown as CoordinatorClient, identity: { deviceId: 'dev-1', key: deviceKey } as unknown as Identity, logger: silentLogger() })
  coordinator.answer = records => ({ acknowledged: records.map(keyOf), rejected: [], duplicates: 0 })
  await again.flush()
  t.is(await reopened.outboxSize(), 0)
  await again.stop()
  await reopened.close()
})

test('only acknowledged or refused records leave the outbox', async t => {
  const { store, outbox, coordinator, task } = await setUp(t)
  coordinator.answer = () => { throw new Error('down') }
  let current = task
  for (const state of ['downloading', 'verifying', 'installing'] as const) current = await outbox.record(current, { ...fields, state })
  await outbox.flush()
  // The coordinator acknowledges the first record and refuses the third; the second it never answers for.
  coordinator.answer = records => ({
    acknowledged: records.map(keyOf).filter(key => key.endsWith('/1')),
    rejected: records.flatMap((record, index) => keyOf(record).endsWith('/3') ? [{ index, reason: 'malformed', message: 'bad' }] : []),
    duplicates: 0
  })
  await outbox.flush()
  t.deepEqual((await store.outboxBatch(10)).map(entry => entry.key), ['dev-1/task-1/1/2'])
  await outbox.stop()
  await store.close()
})

test('a second store on the same folder is refused with DataFolderLockedError', async t => {
  const dir = await tempFolder(t, 'md-outbox-lock-')
  const first = await AgentStore.open(join(dir, 'db'), dir)
  const error = await t.throwsAsync(AgentStore.open(join(dir, 'db'), dir))
  t.is(error?.name, 'DataFolderLockedError')
  await first.close()
})
