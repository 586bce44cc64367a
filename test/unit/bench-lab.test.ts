import test from 'ava'
import { labChartSpec, renderSvg } from '../../bench/charts.js'
import { labChartInput, labFigures, lowerBoundSeconds } from '../../bench/lab/figures.js'
import { payloadBytes, type DeviceOutcome, type PhaseResult } from '../../bench/lab/phase.js'
import { cdfPoints, counterAt, counterRates, quantile } from '../../bench/lab/rates.js'
import { CounterSampler } from '../../bench/lab/sampler.js'

test('counter rates: the average over the interval, and the worst window measured over its real span', t => {
  // 1 MB/s steadily, with one reading 500 ms late: the window that spans it is longer, not faster.
  const samples = [0, 250, 500, 750, 1250, 1500, 1750, 2000, 2250, 2500, 2750, 3000].map(atMs => ({ atMs, bytes: atMs * 1000 }))
  const rates = counterRates(samples, 0, 3000)
  t.is(rates.totalBytes, 3_000_000)
  t.is(rates.averageBytesPerSecond, 1_000_000)
  t.is(rates.worstWindowBytesPerSecond, 1_000_000)
  // A burst of 600 kB within 250 ms shows in the window around it.
  const burst = samples.map(sample => ({ atMs: sample.atMs, bytes: sample.bytes + (sample.atMs >= 1500 ? 600_000 : 0) }))
  t.is(counterRates(burst, 0, 3000).worstWindowBytesPerSecond, 1_600_000)
  t.is(counterAt(samples, 1000), 1_000_000, 'interpolated between readings')
  t.is(counterRates(samples.slice(0, 3), 0, 500).worstWindowBytesPerSecond, 0, 'no window fits in half a second')
})

test('quantiles interpolate; the CDF reaches one at the slowest device', t => {
  t.is(quantile([10, 20, 30, 40, 50], 0.5), 30)
  t.is(quantile([10, 20], 0.95), 19.5)
  t.true(Number.isNaN(quantile([], 0.5)))
  t.deepEqual(cdfPoints([3, 1, 2]), [{ value: 1, fraction: 1 / 3 }, { value: 2, fraction: 2 / 3 }, { value: 3, fraction: 1 }])
})

test('payload of interface counters: bytes less one set of TCP/IPv4 headers per packet', t => {
  t.is(payloadBytes(66 * 10 + 14_480, 10), 14_480)
  t.is(payloadBytes(0, 0), 0)
})

test('the lower bound is the WAN or the cap, whichever is slower', t => {
  t.is(lowerBoundSeconds(100e6 / 8, 100), 1)
  t.is(lowerBoundSeconds(2 * 1024 * 1024, 100, 1024), 2)
})

test('a sampler keeps every reading and survives a failing read', t => {
  let time = 0
  let fail = false
  const sampler = new CounterSampler({ now: () => time, read: () => { if (fail) throw new Error('gone'); return { a: { rxBytes: time * 2, txBytes: time, rxPackets: time / 10 } } } })
  sampler.sample()
  time = 100
  sampler.sample()
  fail = true
  time = 200
  sampler.sample()
  t.deepEqual(sampler.rx.get('a'), [{ atMs: 0, bytes: 0 }, { atMs: 100, bytes: 200 }])
  t.deepEqual(sampler.rxPackets.get('a'), [{ atMs: 0, bytes: 0 }, { atMs: 100, bytes: 10 }])
})

function device (hostname: string, doneMs: number, fromPeers: number, fromOrigin: number): DeviceOutcome {
  return { hostname, site: 'site-1', role: 'steady', state: 'succeeded', startedMs: 0, records: [], downloadStartMs: 100, downloadDoneMs: doneMs, succeededMs: doneMs + 500, bytesFromPeers: fromPeers, bytesFromOrigin: fromOrigin, cpuSeconds: 2, systemCpuSeconds: 0.5, peakRssBytes: 100 * 2 ** 20 }
}

function phase (mode: PhaseResult['mode'], devices: DeviceOutcome[], copies: number): PhaseResult {
  const S = 100e6
  return { mode, startedAt: 0, durationMs: 10_000, taskId: 't', devices, wan: [{ site: 'site-1', rxBytes: copies * S + 1000 * 66, txBytes: 0, rxPackets: 1000, rxPayloadBytes: copies * S }], samples: { 'host:a': [[0, 0, 0], [1000, 10e6, 0]] } }
}

test('figures are set beside their targets and lower bounds, met or missed', async t => {
  const S = 100e6
  // WAN 100 Mbit/s: S/W = 8 s. Two devices per site.
  const meshdeploy = phase('meshdeploy', [device('a', 9_000, S / 2, S / 2), device('b', 9_500, S / 2, S / 2)], 1.01)
  const baseline = phase('baseline', [device('a', 15_000, 0, S), device('b', 16_000, 0, S)], 2)
  const figures = labFigures({ packageBytes: S, devicesPerSite: 2, wanMbit: 100, wanDelayMs: 20, meshdeploy, baseline })
  const byName = new Map(figures.map(f => [f.name, f]))
  t.is(byName.get('WAN bytes into site-1 ÷ package')?.met, true)
  t.is(byName.get('WAN bytes into site-1 ÷ package')?.bound, '1 copy')
  const p95 = byName.get('completion p95 ÷ lower bound')!
  t.is(p95.met, true)
  t.is(p95.bound, 'S/W = 8.0 s')
  t.true(Math.abs(p95.value - 9.475 / 8) < 1e-9)
  const speedUp = byName.get('speed-up over the baseline (last device)')!
  t.is(speedUp.target, '≥ 1.6')
  t.is(speedUp.met, true)
  t.true(Math.abs(speedUp.value - 16 / 9.5) < 1e-9)
  const slow = labFigures({ packageBytes: S, devicesPerSite: 2, wanMbit: 100, wanDelayMs: 20, meshdeploy: phase('meshdeploy', [device('a', 20_000, 0, S)], 1.5) })
  t.is(slow.find(f => f.name === 'completion p95 ÷ lower bound')?.met, false)
  t.is(slow.find(f => f.name === 'WAN bytes into site-1 ÷ package')?.met, false)
  const capped = labFigures({ packageBytes: S, devicesPerSite: 2, wanMbit: 100, wanDelayMs: 20, capKBps: 1000, meshdeploy: phase('meshdeploy', [{ ...device('a', 100_000, 0, S), receive: { totalBytes: S, averageBytesPerSecond: 1000 * 1024 * 0.95, worstWindowBytesPerSecond: 1000 * 1024 * 1.1 } }], 1) })
  t.is(capped.find(f => f.name.startsWith('cap: worst'))?.met, false)
  t.is(capped.find(f => f.name.startsWith('cap: average'))?.met, true)
  // Capped at 1000 KiB/s: S/C = 97.7 s binds every device, the baseline's as well (N·S/W = 16 s): no speed-up is possible.
  const cappedBoth = labFigures({ packageBytes: S, devicesPerSite: 2, wanMbit: 100, wanDelayMs: 20, capKBps: 1000, meshdeploy: phase('meshdeploy', [device('a', 100_000, 0, S)], 1), baseline: phase('baseline', [device('a', 100_000, 0, S), device('b', 110_000, 0, S)], 2) })
  const cappedSpeedUp = cappedBoth.find(f => f.name === 'speed-up over the baseline (last device)')!
  t.is(cappedSpeedUp.target, '≥ 0.8')
  t.is(cappedSpeedUp.met, true)
  t.is(cappedBoth.find(f => f.name === 'baseline: last device ÷ its lower bound')?.bound, 'S/C = 97.7 s')
  // The chart is drawn by Vega-Lite from the same phases.
  const svg = await renderSvg(labChartSpec(labChartInput('test', { packageBytes: S, devicesPerSite: 2, wanMbit: 100, wanDelayMs: 20, meshdeploy, baseline })))
  t.true(svg.startsWith('<svg'))
  t.true(svg.includes('Completion per device (CDF)'))
  t.true(svg.includes('target 1.3 × bound'))
})
