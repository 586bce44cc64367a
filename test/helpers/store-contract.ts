import type { TestFn } from 'ava'
import { InvalidCursorError, UnknownIndexError, type DeviceRecord, type Store, type TaskRecord } from '../../coordinator/store/types.js'

/** Opens an empty store for one test; `reopen` closes it and opens the same data again. */
export type OpenStore = (t: { teardown: (fn: () => Promise<void>) => void }) => Promise<{ store: Store, reopen: () => Promise<Store> }>

export function device (id: string, fields: Partial<DeviceRecord> = {}): DeviceRecord {
  return {
    id,
    hostname: `host-${id}`,
    publicKey: id.padEnd(64, '0').slice(0, 64),
    peerId: `peer-${id}`,
    platform: 'linux',
    arch: 'x64',
    site: 'berlin',
    groups: [],
    status: 'active',
    enrolledAt: '2026-01-01T00:00:00.000Z',
    ...fields
  }
}

function task (id: string, targets: TaskRecord['targets']): TaskRecord {
  return {
    id, name: id, packageId: 'p', action: 'install', targets, runArgs: [], timeoutSeconds: 60, maxAttempts: 1, retryDelaySeconds: 1,
    deferWhileVpn: false, reboot: { policy: 'never' }, revision: 1, rerun: 0, status: 'active', createdAt: '', updatedAt: '', createdBy: 'op',
    startAt: '', validUntil: '', manifest: { payloadType: 'x', keyId: 'k', payload: '', signature: '' }
  }
}

async function keysOf (store: Store, index: { name: string, term: string }): Promise<string[]> {
  const keys: string[] = []
  let cursor: string | undefined
  do {
    const page = await store.collections.devices.page({ index, limit: 2, keysOnly: true, ...(cursor !== undefined ? { cursor } : {}) })
    keys.push(...page.items.map(item => item.key))
    cursor = page.cursor
  } while (cursor !== undefined)
  return keys
}

/**
 * What every store backend must do, as tests: the level store runs them, and
 * a second backend runs the same ones against its own `open`.
 */
export function storeContract (test: TestFn, backend: string, open: OpenStore): void {
  test(`${backend}: pages through a collection in key order with opaque cursors, by prefix, and refuses a cursor of another listing`, async t => {
    const { store } = await open(t)
    await store.write(['d3', 'd1', 'd5', 'd2', 'd4', 'x1'].map(id => ({ type: 'put' as const, collection: 'devices' as const, key: id, value: device(id) })))
    const first = await store.collections.devices.page({ limit: 2, prefix: 'd' })
    t.deepEqual(first.items.map(item => item.key), ['d1', 'd2'])
    t.is(first.items[0].value.hostname, 'host-d1')
    t.truthy(first.cursor)
    const second = await store.collections.devices.page({ limit: 2, prefix: 'd', cursor: first.cursor! })
    t.deepEqual(second.items.map(item => item.key), ['d3', 'd4'])
    const third = await store.collections.devices.page({ limit: 2, prefix: 'd', cursor: second.cursor! })
    t.deepEqual(third.items.map(item => item.key), ['d5'])
    t.is(third.cursor, undefined, 'the last page says so')
    const all = await store.collections.devices.page({})
    t.is(all.items.length, 6)
    await t.throwsAsync(store.collections.devices.page({ cursor: first.cursor! }), { instanceOf: InvalidCursorError }, 'a cursor of the d-prefix listing does not page another one')
    await t.throwsAsync(store.collections.devices.page({ cursor: 'not-a-cursor' }), { instanceOf: InvalidCursorError })
    await t.throwsAsync(store.collections.devices.page({ limit: 0 }), { instanceOf: RangeError })
    t.is((await store.collections.devices.page({ limit: 1_000_000 })).items.length, 6, 'a huge limit is bounded, not refused')
  })

  test(`${backend}: indexes follow puts, changes and deletes in the same write, with counts`, async t => {
    const { store, reopen } = await open(t)
    await store.write([
      { type: 'put', collection: 'devices', key: 'a', value: device('a', { site: 'berlin', groups: ['lab', 'lab'] }) },
      { type: 'put', collection: 'devices', key: 'b', value: device('b', { site: 'berlin', groups: ['lab', 'kiosk'] }) },
      { type: 'put', collection: 'devices', key: 'c', value: device('c', { site: 'paris', groups: [] }) }
    ])
    t.deepEqual(await keysOf(store, { name: 'site', term: 'berlin' }), ['a', 'b'])
    t.deepEqual(await keysOf(store, { name: 'group', term: 'lab' }), ['a', 'b'])
    t.is(await store.collections.devices.count({ name: 'site', term: 'berlin' }), 2)
    t.is(await store.collections.devices.count({ name: 'group', term: 'lab' }), 2, 'a group named twice counts once')
    // b moves to paris and leaves lab; c is deleted; a is written twice in one write.
    await store.write([
      { type: 'put', collection: 'devices', key: 'b', value: device('b', { site: 'paris', groups: ['kiosk'] }) },
      { type: 'del', collection: 'devices', key: 'c' },
      { type: 'put', collection: 'devices', key: 'a', value: device('a', { site: 'rome', status: 'blocked' }) },
      { type: 'put', collection: 'devices', key: 'a', value: device('a', { site: 'berlin', status: 'blocked' }) }
    ])
    t.deepEqual(await keysOf(store, { name: 'site', term: 'berlin' }), ['a'])
    t.deepEqual(await keysOf(store, { name: 'site', term: 'paris' }), ['b'])
    t.deepEqual(await keysOf(store, { name: 'site', term: 'rome' }), [], 'an intermediate value of one write leaves nothing behind')
    t.deepEqual(await keysOf(store, { name: 'group', term: 'lab' }), [])
    t.deepEqual(await keysOf(store, { name: 'status', term: 'blocked' }), ['a'])
    t.is(await store.collections.devices.count({ name: 'site', term: 'paris' }), 1)
    t.is(await store.collections.devices.count({ name: 'site', term: 'rome' }), 0)
    t.is(await store.collections.devices.count({ name: 'status', term: 'active' }), 1)
    t.deepEqual(await keysOf(store, { name: 'hostname', term: 'host-b' }), ['b'], 'host names are indexed lower-cased')
    const values = await store.collections.devices.page({ index: { name: 'site', term: 'paris' } })
    t.is(values.items[0].value.site, 'paris', 'index pages carry the values')
    await t.throwsAsync(store.collections.devices.page({ index: { name: 'colour', term: 'red' } }), { instanceOf: UnknownIndexError })
    await t.throwsAsync(store.collections.devices.count({ name: 'hostname', term: 'host-b' }), { instanceOf: UnknownIndexError }, 'only counted indexes count')
    const again = await reopen()
    t.is(await again.collections.devices.count({ name: 'site', term: 'paris' }), 1, 'indexes and counts are durable')
    t.deepEqual((await again.collections.devices.page({ index: { name: 'status', term: 'blocked' }, keysOnly: true })).items.map(item => item.key), ['a'])
  })

  test(`${backend}: tasks are indexed by their targets and users by department from the top down`, async t => {
    const { store } = await open(t)
    await store.write([
      { type: 'put', collection: 'tasks', key: 't1', value: task('t1', { sites: ['berlin'], groups: ['lab'] }) },
      { type: 'put', collection: 'tasks', key: 't2', value: task('t2', { all: true }) },
      { type: 'put', collection: 'tasks', key: 't3', value: task('t3', { deviceIds: ['Host-A'], departments: ['Sales/EMEA'] }) },
      { type: 'put', collection: 'users', key: 'ann', value: { id: 'ann', department: 'Sales/EMEA/Berlin', role: 'Engineer', devices: ['host-a'], updatedAt: '' } }
    ])
    const tasksUnder = async (term: string): Promise<string[]> => (await store.collections.tasks.page({ index: { name: 'target', term }, keysOnly: true })).items.map(item => item.key)
    t.deepEqual(await tasksUnder('site:berlin'), ['t1'])
    t.deepEqual(await tasksUnder('group:lab'), ['t1'])
    t.deepEqual(await tasksUnder('all'), ['t2'])
    t.deepEqual(await tasksUnder('device:host-a'), ['t3'])
    t.deepEqual(await tasksUnder('department:sales/emea'), ['t3'])
    const usersUnder = async (name: string, term: string): Promise<string[]> => (await store.collections.users.page({ index: { name, term }, keysOnly: true })).items.map(item => item.key)
    t.deepEqual(await usersUnder('department', 'sales'), ['ann'])
    t.deepEqual(await usersUnder('department', 'sales/emea'), ['ann'])
    t.deepEqual(await usersUnder('department', 'sales/emea/berlin'), ['ann'])
    t.deepEqual(await usersUnder('department', 'sales/apac'), [])
    t.deepEqual(await usersUnder('role', 'engineer'), ['ann'])
    t.is(await store.collections.tasks.count({ name: 'status', term: 'active' }), 3)
  })

  test(`${backend}: counters add atomically with the write, report their values, and page by prefix`, async t => {
    const { store, reopen } = await open(t)
    t.is(await store.counters.get('device-version!a'), 0, 'a counter never written is 0')
    const first = await store.write([
      { type: 'put', collection: 'devices', key: 'a', value: device('a') },
      { type: 'add', counter: 'device-version!a', delta: 1 }
    ])
    t.is(first.counters.get('device-version!a'), 1)
    // Concurrent writes share flushes; each learns the value its own addition made.
    const results = await Promise.all([1, 2, 3, 4].map(async n => await store.write([{ type: 'add', counter: 'progress!t!succeeded', delta: n }])))
    t.deepEqual(results.map(result => result.counters.get('progress!t!succeeded')), [1, 3, 6, 10], 'in the order the callers came')
    t.is(await store.counters.get('progress!t!succeeded'), 10)
    await store.write([{ type: 'add', counter: 'progress!t!failed', delta: 2 }, { type: 'add', counter: 'progress!t!failed', delta: -1 }])
    t.deepEqual(await store.counters.getMany(['progress!t!failed', 'progress!t!none']), [1, 0])
    const page = await store.counters.page({ prefix: 'progress!t!', limit: 1 })
    t.deepEqual(page.items.map(item => [item.key, item.value]), [['progress!t!failed', 1]])
    const next = await store.counters.page({ prefix: 'progress!t!', limit: 1, cursor: page.cursor! })
    t.deepEqual(next.items.map(item => [item.key, item.value]), [['progress!t!succeeded', 10]])
    const again = await reopen()
    t.is(await again.counters.get('device-version!a'), 1, 'counters are durable')
  })

  test(`${backend}: one caller's bad write fails alone and leaves indexes and counters as they were`, async t => {
    const { store } = await open(t)
    const good = store.write([{ type: 'put', collection: 'devices', key: 'g', value: device('g') }, { type: 'add', counter: 'n', delta: 1 }])
    const bad = store.write([
      { type: 'put', collection: 'devices', key: 'b', value: device('b') },
      { type: 'add', counter: 'n', delta: 1 },
      // A value the store cannot encode.
      { type: 'put', collection: 'meta', key: 'cycle', value: (() => { const cycle: Record<string, unknown> = {}; cycle.self = cycle; return cycle })() }
    ])
    await good
    await t.throwsAsync(bad)
    t.is(await store.collections.devices.get('b'), undefined)
    t.is(await store.counters.get('n'), 1)
    t.is(await store.collections.devices.count({ name: 'site', term: 'berlin' }), 1)
  })
}
