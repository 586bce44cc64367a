import test from 'ava'
import { LevelStore } from '../../coordinator/store/level-store.js'
import { GroupCommit } from '../../coordinator/store/group-commit.js'
import { storeContract, device } from '../helpers/store-contract.js'
import { tempFolder } from '../helpers/temp.js'
import type { Store } from '../../coordinator/store/types.js'

storeContract(test, 'level', async t => {
  const folder = await tempFolder(t as any, 'md-store-')
  let store: Store = await LevelStore.open(folder)
  t.teardown(async () => { await store.close() })
  return {
    store,
    reopen: async () => {
      await store.close()
      store = await LevelStore.open(folder)
      return store
    }
  }
})

test('level: indexes missing from a store made before them are built when it opens', async t => {
  const folder = await tempFolder(t, 'md-store-')
  const store = await LevelStore.open(folder)
  await store.write([{ type: 'put', collection: 'devices', key: 'a', value: device('a', { site: 'oslo' }) }])
  // What an older coordinator left: the items, but no index and no note that indexes were built.
  await store.write([{ type: 'del', collection: 'meta', key: 'store:indexes' }])
  await (store as any).indexSublevels.get('devices').get('site').clear()
  await (store as any).countSublevel.clear()
  await store.close()
  const reopened = await LevelStore.open(folder)
  t.teardown(async () => { await reopened.close() })
  t.is(await reopened.collections.devices.count({ name: 'site', term: 'oslo' }), 1)
  t.deepEqual((await reopened.collections.devices.page({ index: { name: 'site', term: 'oslo' }, keysOnly: true })).items.map(item => item.key), ['a'])
})

test('group commit: callers arriving during a flush share the next one, in order, and a heavy job goes alone', async t => {
  const flushed: number[][] = []
  let release!: () => void
  let gate = new Promise<void>(resolve => { release = resolve })
  const commits = new GroupCommit<number>({
    flush: async jobs => {
      flushed.push(jobs)
      await gate
    },
    weightOf: job => job,
    maxWeightPerFlush: 10
  })
  const first = commits.commit(1)
  const rest = [2, 3, 4, 20, 5].map(async job => { await commits.commit(job) })
  t.is(commits.waiting, 5)
  gate = Promise.resolve()
  release()
  await Promise.all([first, ...rest])
  t.deepEqual(flushed, [[1], [2, 3, 4], [20], [5]])
})

test('group commit: when a shared flush fails, each job is flushed alone and only the bad one fails', async t => {
  const commits = new GroupCommit<string>({
    flush: async jobs => {
      await new Promise(resolve => setImmediate(resolve))
      if (jobs.includes('bad')) throw new Error('bad job')
    }
  })
  const first = commits.commit('first')
  const results = await Promise.allSettled([first, commits.commit('good'), commits.commit('bad'), commits.commit('also-good')])
  t.deepEqual(results.map(result => result.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
})
