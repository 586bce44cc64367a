import anyTest, { type TestFn } from 'ava'
import pg from 'pg'
import { PostgresStore, redactStoreUrl } from '../../coordinator/store/postgres-store.js'
import { SCHEMA_VERSION, SchemaTooNewError } from '../../coordinator/store/postgres-schema.js'
import type { StoreChange } from '../../coordinator/store/changes.js'
import type { Store } from '../../coordinator/store/types.js'
import { storeContract, device } from '../helpers/store-contract.js'
import { TestPostgres, postgresSkipReason } from '../helpers/postgres.js'

const skipReason = postgresSkipReason()
const test = (skipReason === undefined ? anyTest.serial : anyTest.skip) as TestFn
if (skipReason !== undefined) console.log(`PostgreSQL store tests skipped: ${skipReason}`)

let server: TestPostgres | undefined
anyTest.before(async () => {
  if (skipReason === undefined) server = await TestPostgres.start()
})
anyTest.after.always(async () => { await server?.stop() })

storeContract(test, 'postgres', async t => {
  const url = await server!.createDatabase()
  let store: Store = await PostgresStore.open(url)
  t.teardown(async () => { await store.close() })
  return {
    store,
    reopen: async () => {
      await store.close()
      store = await PostgresStore.open(url)
      return store
    }
  }
})

test('postgres: the schema is made on first start and recorded; a newer schema is refused', async t => {
  const url = await server!.createDatabase()
  const store = await PostgresStore.open(url, { listen: false })
  await store.close()
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  t.teardown(async () => { await client.end() })
  const { rows } = await client.query<{ version: number }>('SELECT version FROM meshdeploy_schema ORDER BY version')
  t.deepEqual(rows.map(row => row.version), Array.from({ length: SCHEMA_VERSION }, (_, at) => at + 1))
  // A second start finds the schema made and changes nothing.
  await (await PostgresStore.open(url, { listen: false })).close()
  t.is((await client.query('SELECT * FROM meshdeploy_schema')).rowCount, SCHEMA_VERSION)
  await client.query("INSERT INTO meshdeploy_schema (version, description) VALUES ($1, 'from a newer coordinator')", [SCHEMA_VERSION + 1])
  const error = await t.throwsAsync(PostgresStore.open(url, { listen: false }), { instanceOf: SchemaTooNewError })
  t.regex(error!.message, /newer than this coordinator knows/)
})

test('postgres: two tokens with one hash are refused, and the write that tried loses nothing else', async t => {
  const url = await server!.createDatabase()
  const store = await PostgresStore.open(url, { listen: false })
  t.teardown(async () => { await store.close() })
  const token = (id: string, hash: string): any => ({ id, name: id, role: 'admin', hash, createdAt: '' })
  await store.write([{ type: 'put', collection: 'operatorTokens', key: 'a', value: token('a', 'h1') }])
  const error = await t.throwsAsync(store.write([
    { type: 'put', collection: 'devices', key: 'd', value: device('d') },
    { type: 'put', collection: 'operatorTokens', key: 'b', value: token('b', 'h1') }
  ]))
  t.is((error as { code?: string }).code, '23505', 'a unique violation')
  t.is(await store.collections.devices.get('d'), undefined, 'the whole write failed')
  t.is(await store.collections.devices.count({ name: 'site', term: 'berlin' }), 0)
  await store.write([{ type: 'put', collection: 'operatorTokens', key: 'a', value: token('a', 'h2') }])
  await store.write([{ type: 'put', collection: 'operatorTokens', key: 'b', value: token('b', 'h1') }])
  t.is((await store.collections.operatorTokens.get('b'))?.hash, 'h1', 'a hash given up can be taken')
})

test('postgres: two stores on one database keep indexes, counts and counters in step, and hear of each other\'s changes by id', async t => {
  const url = await server!.createDatabase()
  const a = await PostgresStore.open(url)
  const b = await PostgresStore.open(url)
  t.teardown(async () => { await a.close(); await b.close() })
  const heard: StoreChange[] = []
  const heardTask = new Promise<void>(resolve => {
    b.changes.on('change', change => {
      heard.push(change)
      if (change.collection === 'tasks') resolve()
    })
  })
  const ownHeard: StoreChange[] = []
  a.changes.on('change', change => { ownHeard.push(change) })
  // Both move the same devices and add to the same counters at once.
  await Promise.all(Array.from({ length: 20 }, async (_, n) => {
    const store = n % 2 === 0 ? a : b
    await store.write([
      { type: 'put', collection: 'devices', key: `d${n % 5}`, value: device(`d${n % 5}`, { site: n % 3 === 0 ? 'paris' : 'berlin' }) },
      { type: 'add', counter: 'shared', delta: 1 }
    ])
  }))
  t.is(await a.counters.get('shared'), 20, 'every addition counts once')
  const berlin = await a.collections.devices.count({ name: 'site', term: 'berlin' })
  const paris = await a.collections.devices.count({ name: 'site', term: 'paris' })
  t.is(berlin + paris, 5, 'each device counted under one site')
  const listed = (await a.collections.devices.page({ index: { name: 'site', term: 'berlin' }, keysOnly: true })).items.length
  t.is(listed, berlin)
  await a.write([{ type: 'put', collection: 'tasks', key: 't1', value: { id: 't1', status: 'active', targets: { all: true } } as any }])
  await heardTask
  t.deepEqual(heard.find(change => change.collection === 'tasks'), { collection: 'tasks', keys: ['t1'] }, 'ids only')
  t.true(heard.some(change => change.collection === 'devices'))
  t.false(ownHeard.some(change => change.collection === 'tasks'), 'a store does not hear its own changes')
})

test('postgres: the address is shown without its password', t => {
  t.is(redactStoreUrl('postgres://md:s3cret@db.example:5432/meshdeploy'), 'postgres://md:***@db.example:5432/meshdeploy')
  t.false(redactStoreUrl('postgres://md:s3cret@db.example/x').includes('s3cret'))
})
