import test from 'ava'
import { MAX_SUMMARY_JSON_CHARS, summarizeChange, targetIdsOf } from '../../coordinator/audit/summary.js'

test('secrets never reach the audit summary, at any depth', t => {
  const summary = summarizeChange(
    { name: 'ci', role: 'operator', nested: { password: 'hunter2', list: [{ clientSecret: 's3cret' }] }, Authorization: 'Bearer x', keyId: 'abc' },
    { id: 'tok-1', name: 'ci', role: 'operator', token: 'mdo_the-secret-itself', hash: 'h' }
  )
  const text = JSON.stringify(summary)
  for (const secret of ['hunter2', 's3cret', 'Bearer x', 'mdo_the-secret-itself']) t.false(text.includes(secret), secret)
  t.deepEqual(summary.result, { id: 'tok-1', name: 'ci', role: 'operator' })
  t.is((summary.request as any).keyId, 'abc', 'a key id names a public key and is kept')
})

test('long values, long lists and deep documents are cut; the whole stays bounded', t => {
  const summary = summarizeChange({ name: 'x'.repeat(1000), targets: { deviceIds: Array.from({ length: 500 }, (_, i) => `dev-${i}`) }, deep: { a: { b: { c: { d: { e: 1 } } } } } }, undefined)
  const request = summary.request as any
  t.true(request.name.length < 300)
  t.is(request.targets.deviceIds.length, 21)
  t.is(request.targets.deviceIds[20], '… 480 more')
  t.is(request.deep.a.b.c, '…')
  const huge = summarizeChange({ fields: Array.from({ length: 20 }, () => ({ a: 'y'.repeat(200), b: 'z'.repeat(200) })) }, undefined)
  t.true(JSON.stringify(huge).length <= MAX_SUMMARY_JSON_CHARS + 100)
  t.true(huge.truncated)
})

test('target ids are the path parameters and the id of what was created', t => {
  t.deepEqual(targetIdsOf({ id: 'dev-1' }, { id: 'dev-1', status: 'blocked' }), ['dev-1'])
  t.deepEqual(targetIdsOf({}, { id: 'task-9' }), ['task-9'])
  t.deepEqual(targetIdsOf({}, 'text'), [])
})
