import test from 'ava'
import {
  instantOf, nextSlot, occurrencesOf, openWindowAt, windowRuleSchema, windowTimesProblems, type WindowTimes
} from '../../protocol/index.js'

const at = (iso: string): number => Date.parse(iso)
const iso = (ms: number | undefined): string | undefined => ms === undefined ? undefined : new Date(ms).toISOString()
const MINUTE = 60_000

const weeknightsBerlin: WindowTimes = { days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '22:00', durationMinutes: 240, timeZone: 'Europe/Berlin' }

test('wall-clock times become instants across daylight-saving changes in two zones', t => {
  const table: Array<[string, [number, number, number, number, number, string], string]> = [
    ['Berlin winter', [2026, 3, 28, 2, 30, 'Europe/Berlin'], '2026-03-28T01:30:00.000Z'],
    ['Berlin: 02:30 skipped in spring moves forward to 03:30 CEST', [2026, 3, 29, 2, 30, 'Europe/Berlin'], '2026-03-29T01:30:00.000Z'],
    ['Berlin summer', [2026, 3, 30, 2, 30, 'Europe/Berlin'], '2026-03-30T00:30:00.000Z'],
    ['Berlin: 02:30 twice in autumn is the first (CEST)', [2026, 10, 25, 2, 30, 'Europe/Berlin'], '2026-10-25T00:30:00.000Z'],
    ['Berlin after the autumn change', [2026, 10, 26, 2, 30, 'Europe/Berlin'], '2026-10-26T01:30:00.000Z'],
    ['New York winter', [2026, 3, 8, 1, 30, 'America/New_York'], '2026-03-08T06:30:00.000Z'],
    ['New York: 02:15 skipped in spring moves forward to 03:15 EDT', [2026, 3, 8, 2, 15, 'America/New_York'], '2026-03-08T07:15:00.000Z'],
    ['New York: 01:30 twice in autumn is the first (EDT)', [2026, 11, 1, 1, 30, 'America/New_York'], '2026-11-01T05:30:00.000Z'],
    ['New York after the autumn change', [2026, 11, 2, 1, 30, 'America/New_York'], '2026-11-02T06:30:00.000Z'],
    ['a zone without daylight saving', [2026, 6, 15, 23, 0, 'Asia/Tokyo'], '2026-06-15T14:00:00.000Z']
  ]
  for (const [name, [year, month, day, hour, minute, zone], expected] of table) {
    t.is(iso(instantOf(year, month, day, hour, minute, zone)), expected, name)
  }
})

test('recurring windows: the next slot, crossing midnight, too short a remainder', t => {
  const table: Array<[string, string, number, string | undefined, string | undefined]> = [
    // name, now, minutes needed, expected start, expected end
    ['Wednesday afternoon: tonight at 22:00 CET', '2026-03-04T12:00:00Z', 60, '2026-03-04T21:00:00.000Z', '2026-03-05T01:00:00.000Z'],
    ['inside the window after midnight, long enough: now', '2026-03-04T23:30:00Z', 60, '2026-03-04T23:30:00.000Z', '2026-03-05T01:00:00.000Z'],
    ['inside after midnight, 30 minutes left for an hour of work: the next night', '2026-03-05T00:30:00Z', 60, '2026-03-05T21:00:00.000Z', '2026-03-06T01:00:00.000Z'],
    ['Saturday, after Friday night\'s window closed: Monday night', '2026-03-07T01:00:00Z', 60, '2026-03-09T21:00:00.000Z', '2026-03-10T01:00:00.000Z'],
    ['work longer than any window: none', '2026-03-04T12:00:00Z', 241, undefined, undefined]
  ]
  for (const [name, now, minutes, start, end] of table) {
    const slot = nextSlot([weeknightsBerlin], at(now), minutes * MINUTE, 'UTC')
    t.is(iso(slot?.startMs), start, name)
    t.is(iso(slot?.endMs), end, name)
  }
})

test('a window open across midnight is open after midnight and closed at its end', t => {
  t.deepEqual(openWindowAt([weeknightsBerlin], at('2026-03-04T23:59:00Z'), 'UTC'), { startMs: at('2026-03-04T21:00:00Z'), endMs: at('2026-03-05T01:00:00Z') })
  t.is(openWindowAt([weeknightsBerlin], at('2026-03-05T01:00:00Z'), 'UTC'), undefined, 'the end is not inside')
  t.is(openWindowAt([weeknightsBerlin], at('2026-03-04T20:59:59Z'), 'UTC'), undefined)
  // Saturday's window is the one that opened Friday night: none on Saturday night.
  t.is(openWindowAt([weeknightsBerlin], at('2026-03-07T22:00:00Z'), 'UTC'), undefined)
})

test('a window that spans a daylight-saving change lasts its elapsed duration', t => {
  const saturday = { days: ['sat'], start: '22:00', durationMinutes: 360, timeZone: 'Europe/Berlin' } satisfies WindowTimes
  t.deepEqual(occurrencesOf(saturday, at('2026-03-28T00:00:00Z'), at('2026-03-30T00:00:00Z'), 'UTC'), [{ startMs: at('2026-03-28T21:00:00Z'), endMs: at('2026-03-29T03:00:00Z') }])
  const sundayNewYork = { days: ['sun'], start: '01:30', durationMinutes: 120, timeZone: 'America/New_York' } satisfies WindowTimes
  t.deepEqual(occurrencesOf(sundayNewYork, at('2026-10-31T00:00:00Z'), at('2026-11-02T00:00:00Z'), 'UTC'), [{ startMs: at('2026-11-01T05:30:00Z'), endMs: at('2026-11-01T07:30:00Z') }])
  const daily0230 = { days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], start: '02:30', durationMinutes: 60, timeZone: 'Europe/Berlin' } satisfies WindowTimes
  t.deepEqual(occurrencesOf(daily0230, at('2026-03-28T00:00:00Z'), at('2026-03-31T00:00:00Z'), 'UTC').map(interval => iso(interval.startMs)), [
    '2026-03-28T01:30:00.000Z', '2026-03-29T01:30:00.000Z', '2026-03-30T00:30:00.000Z'
  ])
})

test('one-off windows open once, on their date in their zone', t => {
  const once = { date: '2026-06-15', start: '23:00', durationMinutes: 180, timeZone: 'Asia/Tokyo' } satisfies WindowTimes
  t.is(iso(nextSlot([once], at('2026-06-01T00:00:00Z'), 60 * MINUTE, 'UTC')?.startMs), '2026-06-15T14:00:00.000Z')
  t.is(openWindowAt([once], at('2026-06-15T13:59:59Z'), 'UTC'), undefined)
  t.truthy(openWindowAt([once], at('2026-06-15T16:59:59Z'), 'UTC'))
  t.is(nextSlot([once], at('2026-06-15T16:30:00Z'), 60 * MINUTE, 'UTC'), undefined, '30 minutes left and never again')
  t.is(nextSlot([once], at('2026-06-16T00:00:00Z'), MINUTE, 'UTC'), undefined, 'over')
})

test('rules without a zone follow the device\'s own zone', t => {
  const morning = { days: ['mon'], start: '09:00', durationMinutes: 60 } satisfies WindowTimes
  const from = at('2026-03-09T00:00:00Z')
  t.is(iso(nextSlot([morning], from, MINUTE, 'Europe/Berlin')?.startMs), '2026-03-09T08:00:00.000Z')
  t.is(iso(nextSlot([morning], from, MINUTE, 'America/New_York')?.startMs), '2026-03-09T13:00:00.000Z', 'EDT since March 8')
})

test('touching and overlapping windows make one period long enough for longer work', t => {
  const first = { days: ['wed'], start: '22:00', durationMinutes: 60, timeZone: 'UTC' } satisfies WindowTimes
  const second = { days: ['wed'], start: '23:00', durationMinutes: 120, timeZone: 'UTC' } satisfies WindowTimes
  const third = { days: ['thu'], start: '00:30', durationMinutes: 60, timeZone: 'UTC' } satisfies WindowTimes
  const slot = nextSlot([third, second, first], at('2026-03-04T12:00:00Z'), 200 * MINUTE, 'UTC')
  t.deepEqual(slot, { startMs: at('2026-03-04T22:00:00Z'), endMs: at('2026-03-05T01:30:00Z') })
  t.is(nextSlot([first], at('2026-03-04T12:00:00Z'), 200 * MINUTE, 'UTC', 14 * 24 * 3600_000), undefined)
})

test('a window rule is days or a date, a week at most when recurring, in a zone that exists', t => {
  t.deepEqual(windowTimesProblems({ start: '22:00', durationMinutes: 60 }).map(problem => problem.path), ['days'])
  t.deepEqual(windowTimesProblems({ days: ['mon'], date: '2026-01-01', start: '22:00', durationMinutes: 60 }).map(problem => problem.path), ['days'])
  t.deepEqual(windowTimesProblems({ days: ['mon'], start: '22:00', durationMinutes: 7 * 24 * 60 + 1 }).map(problem => problem.path), ['durationMinutes'])
  t.deepEqual(windowTimesProblems({ date: '2026-01-01', start: '22:00', durationMinutes: 7 * 24 * 60 + 1 }), [])
  t.false(windowRuleSchema.safeParse({ id: 'w', name: 'n', days: ['mon'], start: '24:00', durationMinutes: 60 }).success)
  t.false(windowRuleSchema.safeParse({ id: 'w', name: 'n', days: ['mon'], start: '22:00', durationMinutes: 60, timeZone: 'Mars/Olympus' }).success)
  t.true(windowRuleSchema.safeParse({ id: 'w', name: 'n', days: ['mon'], start: '22:00', durationMinutes: 60, timeZone: 'Australia/Sydney' }).success)
})
