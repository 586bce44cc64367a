import test from 'ava'
import { MdnsQueryPolicy } from '../../agent/p2p/mdns-queries.js'

const policy = (random = 0.5): MdnsQueryPolicy => new MdnsQueryPolicy({ startQueriesMs: [1000, 3000, 7000], wantingIntervalMs: 30_000, minQuietIntervalMs: 60_000, maxQuietIntervalMs: 480_000, random: () => random })

test('queries come close together while the agent starts, whatever it knows', t => {
  for (const wants of [true, false]) {
    const schedule = policy()
    t.deepEqual([schedule.next(wants), schedule.next(wants), schedule.next(wants)], [1000, 2000, 4000])
  }
})

test('steady schedule: a table of what the agent knows and the delay to its next query', t => {
  const schedule = policy()
  for (let i = 0; i < 3; i++) schedule.next(true)
  const table: Array<[wantsPeers: boolean, delayMs: number]> = [
    [true, 30_000], // knows fewer peers than it holds: asks every 30 s
    [true, 30_000],
    [false, 60_000], // knows enough: 1 min, doubling…
    [false, 120_000],
    [false, 240_000],
    [false, 480_000], // …up to the ceiling
    [false, 480_000],
    [true, 30_000], // peers gone: back to 30 s…
    [false, 60_000] // …and the quiet back-off starts over
  ]
  for (const [wantsPeers, delayMs] of table) t.is(schedule.next(wantsPeers), delayMs, `wantsPeers ${String(wantsPeers)}`)
})

test('steady delays are jittered between ¾ and 1¼ so a site does not query in step', t => {
  for (const [random, expected] of [[0, 45_000], [0.999999, 75_000]] as const) {
    const schedule = policy(random)
    for (let i = 0; i < 3; i++) schedule.next(false)
    t.is(Math.round(schedule.next(false) / 1000), expected / 1000)
  }
})

test('a site of 48 agents at rest: answers each agent hears per second stay under three, not hundreds', t => {
  // Every query is answered by every other agent, and every answer reaches every agent (multicast).
  const agents = 48
  // The second hour: start-up is over (the first hour has the start-up queries and the back-off).
  const horizonMs = 60 * 60_000
  let queries = 0
  for (let agent = 0; agent < agents; agent++) {
    const schedule = new MdnsQueryPolicy({ random: () => 0.5 })
    for (let at = 0; at < 2 * horizonMs; at += schedule.next(false)) if (at >= horizonMs) queries++
  }
  const answersPerSecond = queries * (agents - 1) / (horizonMs / 1000)
  t.true(answersPerSecond < 3, `${answersPerSecond.toFixed(2)} answers per second`)
  // A fixed 5 s interval: 48 × 47 / 5.
  t.is(Math.round(agents * (agents - 1) / 5), 451)
})
