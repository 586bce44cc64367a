import test from 'ava'
import { MAX_SPREAD_MS, reconnectDelayMs, spreadOfAnswer } from '../../agent/reconnect.js'
import { reconnectSpreadSeconds } from '../../coordinator/agents/assignments.js'

/** Draws the given numbers in turn: the backoff's jitter first, then the share of the spread. */
function draws (...values: number[]): () => number {
  let at = 0
  return () => values[at++ % values.length]
}

const delays: Array<{ name: string, input: Parameters<typeof reconnectDelayMs>[0], random: number[], expect: number }> = [
  { name: 'first failure, no spread, no jitter drawn', input: { attempt: 0, spreadMs: 0 }, random: [0, 0], expect: 1000 },
  { name: 'first failure, the most jitter: half the backoff again', input: { attempt: 0, spreadMs: 0 }, random: [0.999999, 0], expect: 1500 },
  { name: 'the backoff doubles with each failure in a row', input: { attempt: 3, spreadMs: 0 }, random: [0, 0], expect: 8000 },
  { name: 'and stops at 30 s', input: { attempt: 12, spreadMs: 0 }, random: [0, 0], expect: 30_000 },
  { name: 'a very long outage does not overflow', input: { attempt: 10_000, spreadMs: 0 }, random: [0, 0], expect: 30_000 },
  { name: 'a Retry-After replaces the backoff, jitter on top', input: { attempt: 5, retryAfterMs: 4000, spreadMs: 0 }, random: [0.5, 0], expect: 5000 },
  { name: 'the spread adds its drawn share: the last of a 10 s spread', input: { attempt: 0, spreadMs: 10_000 }, random: [0, 0.99], expect: 10_900 },
  { name: 'the spread adds its drawn share: the middle', input: { attempt: 0, spreadMs: 10_000 }, random: [0, 0.5], expect: 6000 },
  { name: 'the spread comes on a Retry-After too', input: { attempt: 0, retryAfterMs: 2000, spreadMs: 10_000 }, random: [0, 0.25], expect: 4500 },
  { name: 'only the first failure is spread: later ones keep their place in the spread fleet', input: { attempt: 1, spreadMs: 10_000 }, random: [0, 0.5], expect: 2000 },
  { name: 'a spread beyond five minutes is cut to five minutes', input: { attempt: 0, spreadMs: 3_600_000 }, random: [0, 0.5], expect: 1000 + MAX_SPREAD_MS / 2 },
  { name: 'a spread that is no number counts as none', input: { attempt: 0, spreadMs: Number.NaN }, random: [0, 0.5], expect: 1000 },
  { name: 'a negative spread counts as none', input: { attempt: 0, spreadMs: -5000 }, random: [0, 0.5], expect: 1000 }
]

for (const row of delays) {
  test(`reconnect delay: ${row.name}`, t => {
    t.is(reconnectDelayMs(row.input, draws(...row.random)), row.expect)
  })
}

test('reconnect delay: a fleet told to spread over 10 s comes back evenly over it, not in the same half second', t => {
  // A seeded generator: 10,000 agents lose the coordinator at the same instant.
  let seed = 42
  const random = (): number => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31
    return seed / 2 ** 31
  }
  const perSecond = (spreadMs: number): number[] => {
    const buckets = new Array<number>(12).fill(0)
    for (let agent = 0; agent < 10_000; agent++) buckets[Math.floor(reconnectDelayMs({ attempt: 0, spreadMs }, random) / 1000)]++
    return buckets
  }
  const bunched = perSecond(0)
  t.is(bunched[1], 10_000, 'without a spread every agent returns between 1 and 1.5 s')
  const spread = perSecond(10_000)
  t.true(Math.max(...spread) <= 1300, `busiest second ${Math.max(...spread)} of 10,000`)
  t.is(spread.reduce((sum, count) => sum + count, 0), 10_000)
})

const spreads: Array<{ devices: number, perSecond: number, poll: number, expect: number }> = [
  { devices: 0, perSecond: 1000, poll: 30, expect: 0 },
  { devices: 10, perSecond: 1000, poll: 30, expect: 0.01 },
  { devices: 10_000, perSecond: 1000, poll: 30, expect: 10 },
  { devices: 100_000, perSecond: 1000, poll: 30, expect: 30 },
  { devices: 100_000, perSecond: 5000, poll: 30, expect: 20 },
  { devices: 1, perSecond: 3, poll: 30, expect: 0.334 }
]

for (const row of spreads) {
  test(`reconnect spread: ${row.devices} devices at ${row.perSecond}/s, poll interval ${row.poll} s → ${row.expect} s`, t => {
    t.is(reconnectSpreadSeconds(row.devices, row.perSecond, row.poll), row.expect)
  })
}

test('reconnect spread of an answer: seconds in milliseconds; nothing usable is none', t => {
  t.is(spreadOfAnswer({ reconnectSpreadSeconds: 2.5 }), 2500)
  t.is(spreadOfAnswer({ reconnectSpreadSeconds: 'ten' }), 0)
  t.is(spreadOfAnswer({ reconnectSpreadSeconds: -1 }), 0)
  t.is(spreadOfAnswer({ reconnectSpreadSeconds: Number.POSITIVE_INFINITY }), 0)
  t.is(spreadOfAnswer({ reconnectSpreadSeconds: 86_400 }), MAX_SPREAD_MS)
  t.is(spreadOfAnswer({}), 0)
  t.is(spreadOfAnswer(undefined), 0)
})
