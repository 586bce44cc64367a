import test from 'ava'
import { EventQueue } from '../../bench/sim/events.js'
import { SiteSimulation } from '../../bench/sim/site.js'

test('the event queue runs events in time order, ties in the order scheduled, and never goes back in time', t => {
  const queue = new EventQueue()
  const seen: string[] = []
  queue.at(30, () => { seen.push('c') })
  queue.at(10, () => { seen.push('a'); queue.at(5, () => { seen.push(`late@${queue.now}`) }) })
  queue.at(10, () => { seen.push('b') })
  queue.run()
  t.deepEqual(seen, ['a', 'b', 'late@10', 'c'])
})

const MBIT = 1_000_000 / 8
const sites: Array<{ name: string, devices: number, maxPeers?: number, churn?: boolean, copiesAtMost: number }> = [
  { name: 'a small site (every device an origin fetcher)', devices: 6, copiesAtMost: 1.01 },
  { name: 'a site of 60 with peer sets of 8 (origin fetchers among them)', devices: 60, maxPeers: 8, copiesAtMost: 1.02 },
  { name: 'a site of 40 with two devices killed and restarted and two joining late', devices: 40, churn: true, copiesAtMost: 1.1 }
]
for (const row of sites) {
  test(`simulated ${row.name}: every device succeeds, the WAN carries about one copy, no device over its bound of connections`, t => {
    const packageBytes = 16 * 1024 * 1024
    const boundMs = packageBytes / (100 * MBIT) * 1000
    const outcome = new SiteSimulation({
      devices: row.devices,
      packageBytes,
      wanBytesPerSecond: 100 * MBIT,
      lanBytesPerSecond: 1000 * MBIT,
      ...(row.maxPeers !== undefined ? { maxPeers: row.maxPeers } : {}),
      ...(row.churn === true ? { churn: { killed: 2, killAtMs: 0.3 * boundMs, restartAfterMs: 2000, late: 2, lateAtMs: 0.5 * boundMs } } : {})
    }).run()
    t.is(outcome.succeeded, row.devices)
    t.true(outcome.wanCopies <= row.copiesAtMost, `${outcome.wanCopies} copies`)
    t.true(outcome.maxConnections <= (row.maxPeers ?? 16))
    t.true(outcome.lastDoneMs >= outcome.boundMs, 'nothing beats the physical bound')
  })
}
