import test from 'ava'
import { compareVersions, installOrder, checkAcyclic, resolveReference, type PackageGraphNode } from '../../coordinator/packages/dependencies.js'
import { parseDays, parseDurationMinutes } from '../../coordinator/cli/window-options.js'
import { decidePhase, ringOf, stableShare } from '../../coordinator/tasks/phases.js'
import { parsePhase, taskFieldsFrom } from '../../coordinator/cli/task-options.js'

test('versions compare the way packagers number them', t => {
  const table: Array<[string, string, number]> = [
    ['1.9', '1.10', -1], ['1.10', '1.10', 0], ['2.0', '1.99.9', 1], ['1.0', '1.0.0', -1], ['1.0-rc1', '1.0', -1],
    ['1.0-rc2', '1.0-rc10', -1], ['23.01', '9.20', 1], ['1.0a', '1.0b', -1], ['1.2.3+build7', '1.2.3+build10', -1]
  ]
  for (const [a, b, expected] of table) t.is(Math.sign(compareVersions(a, b)), expected, `${a} vs ${b}`)
})

const node = (id: string, name: string, version: string, dependsOn: PackageGraphNode['dependsOn'] = undefined, supersedes: PackageGraphNode['supersedes'] = undefined): PackageGraphNode =>
  ({ id, name, version, createdAt: `2026-01-0${id.length}`, ...(dependsOn !== undefined ? { dependsOn } : {}), ...(supersedes !== undefined ? { supersedes } : {}) })

test('dependencies resolve to the newest fitting version and install deepest first, each once', t => {
  const c1 = node('c1', 'c', '1.0')
  const c2 = node('c2', 'c', '2.0')
  const b = node('b', 'b', '1.0', [{ name: 'c', minVersion: '1.5' }])
  const d = node('d', 'd', '1.0', [{ packageId: 'c1' }])
  const a = node('a', 'a', '1.0', [{ packageId: 'b' }, { name: 'd' }, { name: 'c' }])
  const all = [a, b, c1, c2, d]
  t.is(resolveReference({ name: 'c' }, all)?.id, 'c2')
  t.is(resolveReference({ name: 'c', minVersion: '3' }, all), undefined)
  t.deepEqual(installOrder(a, all).map(entry => entry.id), ['c2', 'b', 'c1', 'd'])
  t.notThrows(() => { checkAcyclic(a, all, 'dependsOn') })
  const loop = node('c3', 'c', '3.0', [{ packageId: 'a' }])
  const error = t.throws(() => { checkAcyclic(loop, all, 'dependsOn') })
  t.is(error?.name, 'DependencyCycleError')
  t.regex(error?.message ?? '', /c 3\.0 → a 1\.0 → b 1\.0 → c 3\.0/)
  t.is(t.throws(() => { checkAcyclic(node('x', 'x', '1', undefined, [{ packageId: 'y', mode: 'upgrade' }]), [node('y', 'y', '1', undefined, [{ packageId: 'x', mode: 'replace' }])], 'supersedes') })?.name, 'DependencyCycleError')
})

test('window days and durations as operators type them', t => {
  t.deepEqual(parseDays('mon-fri'), ['mon', 'tue', 'wed', 'thu', 'fri'])
  t.deepEqual(parseDays('fri-mon'), ['sun', 'mon', 'fri', 'sat'])
  t.deepEqual(parseDays('Saturday,sun'), ['sun', 'sat'])
  t.deepEqual(parseDays('daily'), ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'])
  t.deepEqual(parseDays('weekends,wed'), ['sun', 'wed', 'sat'])
  t.is(t.throws(() => parseDays('someday'))?.name, 'UsageError')
  t.is(parseDurationMinutes('240'), 240)
  t.is(parseDurationMinutes('4h'), 240)
  t.is(parseDurationMinutes('1h30m'), 90)
  t.is(parseDurationMinutes('2d'), 2880)
  t.is(t.throws(() => parseDurationMinutes('4 hours'))?.name, 'UsageError')
})

test('rings: groups first, then stable slices of the targets by percent, the rest in the last ring', t => {
  const phases = [{ groups: ['pilot'] }, { percent: 10 }, { percent: 30 }, {}]
  t.is(ringOf('task-1', { id: 'dev-a', groups: ['pilot', 'x'] }, phases), 0)
  const counts = [0, 0, 0, 0]
  for (let index = 0; index < 10_000; index++) counts[ringOf('task-1', { id: `dev-${index}`, groups: [] }, phases)]++
  t.is(counts[0], 0)
  t.true(Math.abs(counts[1] - 1000) < 150, `10% → ${counts[1]}`)
  t.true(Math.abs(counts[2] - 3000) < 250, `30% → ${counts[2]}`)
  t.is(counts[1] + counts[2] + counts[3], 10_000)
  t.is(ringOf('task-1', { id: 'dev-42', groups: [] }, phases), ringOf('task-1', { id: 'dev-42', groups: [] }, phases), 'the same every time')
  t.true(stableShare('task-1', 'dev-42') !== stableShare('task-2', 'dev-42'), 'another task draws its rings afresh')
})

test('phase decisions: halt past the failure threshold, promote past the success threshold after the soak', t => {
  const phases = [{ groups: ['pilot'], successPercent: 90, minSoakSeconds: 600, maxFailurePercent: 10 }, { percent: 50, autoPromote: false }, {}]
  const start = Date.parse('2026-03-02T09:00:00Z')
  const state = { current: 0, rings: [{ startedAt: new Date(start).toISOString() }, {}, {}] }
  const table: Array<[string, Parameters<typeof decidePhase>[0], string]> = [
    ['nothing yet', { phases, state, counts: { total: 10, succeeded: 0, failed: 0 }, nowMs: start }, 'none'],
    ['one failure in ten is not more than 10%', { phases, state, counts: { total: 10, succeeded: 5, failed: 1 }, nowMs: start }, 'none'],
    ['two in ten is', { phases, state, counts: { total: 10, succeeded: 5, failed: 2 }, nowMs: start }, 'halt'],
    ['an overridden halt does not come back', { phases, state: { ...state, haltOverridden: [0] }, counts: { total: 10, succeeded: 5, failed: 2 }, nowMs: start }, 'none'],
    ['enough succeeded, soaking', { phases, state, counts: { total: 10, succeeded: 9, failed: 1 }, nowMs: start + 599_000 }, 'wait'],
    ['enough succeeded and soaked', { phases, state, counts: { total: 10, succeeded: 9, failed: 1 }, nowMs: start + 600_000 }, 'promote'],
    ['an empty ring passes after its soak', { phases, state, counts: { total: 0, succeeded: 0, failed: 0 }, nowMs: start + 600_000 }, 'promote'],
    ['a manual ring waits for the operator', { phases, state: { ...state, current: 1 }, counts: { total: 4, succeeded: 4, failed: 0 }, nowMs: start + 10 ** 9 }, 'none'],
    ['the last ring still halts', { phases, state: { ...state, current: 2 }, counts: { total: 4, succeeded: 0, failed: 1 }, nowMs: start }, 'halt'],
    ['a halted rollout decides nothing', { phases, state, counts: { total: 10, succeeded: 0, failed: 9 }, nowMs: start, halted: true }, 'none']
  ]
  for (const [name, input, action] of table) t.is(decidePhase(input).action as string, action, name)
  t.deepEqual(decidePhase(table[4][1]), { action: 'wait', atMs: start + 600_000 })
})

test('task options: rings and windows as operators type them', t => {
  t.deepEqual(parsePhase('name=pilot,groups=pilot+it,success=100,soak=1d,halt=2'), { name: 'pilot', groups: ['pilot', 'it'], successPercent: 100, minSoakSeconds: 86_400, maxFailurePercent: 2 })
  t.deepEqual(parsePhase('percent=10,manual'), { percent: 10, autoPromote: false })
  t.deepEqual(parsePhase('rest'), {})
  t.is(t.throws(() => parsePhase('colour=blue'))?.name, 'UsageError')
  t.deepEqual(taskFieldsFrom({ phase: ['groups=pilot', 'rest'], maintenanceWindows: 'ignore', targetSuperseded: false }, false), { phases: [{ groups: ['pilot'] }, {}], maintenanceWindows: 'ignore', targetSuperseded: false })
  t.deepEqual(taskFieldsFrom({ targetSuperseded: true, maxAttempts: 2 }, true), { maxAttempts: 2 })
})
