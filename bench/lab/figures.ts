import type { LabChartInput } from '../charts.js'
import { figure, type Figure } from '../report.js'
import type { PhaseResult } from './phase.js'
import { counterAt, quantile, rateSeries } from './rates.js'
import type { CurlReference, RoundTrip } from './reference.js'

/** The issue's targets. */
export const TARGETS = {
  /** WAN bytes per site ÷ package size. */
  wanCopiesAtMost: 1.02,
  /** Completion at p95 ÷ max(S/W, S/C). */
  completionRatioAtMost: 1.3,
  /** Speed-up over the baseline, × devices per site. */
  speedUpPerDeviceAtLeast: 0.8,
  /** Worst one-second window ÷ cap. */
  capWorstWindowAtMost: 1.05,
  /** Average ÷ cap, when the cap is the bottleneck. */
  capAverageAtLeast: 0.9
} as const

export interface LabFiguresInput {
  packageBytes: number
  devicesPerSite: number
  wanMbit: number
  wanDelayMs: number
  capKBps?: number
  meshdeploy: PhaseResult
  baseline?: PhaseResult
  reference?: CurlReference
  link?: RoundTrip
}

const seconds = (ms: number): number => ms / 1000
const SUCCESS = new Set(['succeeded', 'succeeded-reboot-pending', 'already-installed'])

/** max(S/W, S/C): the time in which no device can have the package, in seconds. */
export function lowerBoundSeconds (packageBytes: number, wanMbit: number, capKBps?: number): number {
  const wanBytesPerSecond = wanMbit * 1e6 / 8
  return Math.max(packageBytes / wanBytesPerSecond, capKBps === undefined ? 0 : packageBytes / (capKBps * 1024))
}

function completions (phase: PhaseResult): number[] {
  return phase.devices.map(device => device.downloadDoneMs === undefined ? Number.POSITIVE_INFINITY : seconds(device.downloadDoneMs))
}

/** Every figure of a lab run beside its target and lower bound. */
export function labFigures (input: LabFiguresInput): Figure[] {
  const { packageBytes: S, devicesPerSite: N, meshdeploy: mesh, baseline } = input
  const bound = lowerBoundSeconds(S, input.wanMbit, input.capKBps)
  const boundText = input.capKBps !== undefined && S / (input.capKBps * 1024) > S / (input.wanMbit * 1e6 / 8)
    ? `S/C = ${bound.toFixed(1)} s`
    : `S/W = ${bound.toFixed(1)} s`
  const figures: Figure[] = []
  const total = mesh.devices.length
  const succeeded = mesh.devices.filter(device => SUCCESS.has(device.state)).length
  figures.push(figure('devices that succeeded (meshdeploy)', succeeded, `of ${total}`, { atLeast: total }))
  if (baseline !== undefined) figures.push(figure('devices that succeeded (baseline)', baseline.devices.filter(device => SUCCESS.has(device.state)).length, `of ${baseline.devices.length}`, { atLeast: baseline.devices.length }))

  const curlWire = input.reference !== undefined ? `; curl's one copy ${(input.reference.wanRxBytes / S).toFixed(3)} ×` : ''
  for (const [index, site] of mesh.wan.entries()) {
    const naive = baseline?.wan[index]
    figures.push(figure(`WAN bytes into ${site.site} ÷ package`, site.rxPayloadBytes / S, '×', { atMost: TARGETS.wanCopiesAtMost },
      `TCP payload (interface bytes − packets × 66 header bytes); with headers ${(site.rxBytes / S).toFixed(3)} ×${curlWire}${naive !== undefined ? `; baseline ${(naive.rxPayloadBytes / S).toFixed(2)} × (N = ${N})` : ''}`, '1 copy'))
  }

  const meshTimes = completions(mesh)
  const p95 = quantile(meshTimes, 0.95)
  const last = Math.max(...meshTimes)
  figures.push(figure('completion p95 ÷ lower bound', p95 / bound, '×', { atMost: TARGETS.completionRatioAtMost },
    `p95 ${p95.toFixed(1)} s (interpolated); completion = the device holds the package verified`, boundText))
  figures.push(figure('completion of the last device ÷ lower bound', last / bound, '×', undefined, `last device ${last.toFixed(1)} s`, boundText))
  const done = mesh.devices.map(device => device.succeededMs === undefined ? Number.POSITIVE_INFINITY : seconds(device.succeededMs))
  figures.push(figure('task done on the last device', Math.max(...done), 's', undefined, 'assembled, whole-file hash, files distributed'))

  if (baseline !== undefined) {
    const baselineLast = Math.max(...completions(baseline))
    // The baseline's N copies share the WAN; a device's cap still binds each of them.
    const wanSeconds = S / (input.wanMbit * 1e6 / 8)
    const capSeconds = input.capKBps === undefined ? 0 : S / (input.capKBps * 1024)
    const baselineBound = Math.max(N * wanSeconds, capSeconds)
    const baselineBoundText = N * wanSeconds >= capSeconds ? `N·S/W = ${baselineBound.toFixed(1)} s` : `S/C = ${baselineBound.toFixed(1)} s`
    // 0.8 × N where the WAN binds both; where a cap binds, no exchange can beat the ratio of the two bounds.
    const possible = Math.min(N, baselineBound / bound)
    figures.push(figure('speed-up over the baseline (last device)', baselineLast / last, '×', { atLeast: Number((TARGETS.speedUpPerDeviceAtLeast * possible).toFixed(2)) },
      `baseline last device ${baselineLast.toFixed(1)} s; every device from the origin (--p2p off)${possible < N ? `; the cap allows at most ${possible.toFixed(2)} ×` : ''}`, possible < N ? `bounds' ratio ${possible.toFixed(2)}` : `N = ${N}`))
    figures.push(figure('baseline: last device ÷ its lower bound', baselineLast / baselineBound, '×', undefined, 'N devices share the WAN, each within its cap', baselineBoundText))
  }

  if (input.reference !== undefined) {
    const ref = input.reference
    figures.push(figure('curl of the same bytes, alone on the WAN', ref.seconds, 's', undefined,
      `${(ref.bytes * 8 / ref.seconds / 1e6).toFixed(1)} Mbit/s of payload (the physical reference)`, `S/W = ${(S / (input.wanMbit * 1e6 / 8)).toFixed(1)} s`))
  }
  if (input.link !== undefined) {
    figures.push(figure('WAN round trip (ping, idle)', input.link.averageMs, 'ms', undefined, `min ${input.link.minMs} ms, loss ${input.link.lossPercent.toFixed(1)} %`, `2 × delay = ${2 * input.wanDelayMs} ms`))
  }

  if (input.capKBps !== undefined) {
    const cap = input.capKBps * 1024
    const measured = mesh.devices.filter(device => device.receive !== undefined)
    const worst = Math.max(...measured.map(device => device.receive!.worstWindowBytesPerSecond))
    const lowest = Math.min(...measured.map(device => device.receive!.averageBytesPerSecond))
    // The cap binds when one device alone cannot reach it through the WAN's rate either way.
    const binds = cap < input.wanMbit * 1e6 / 8
    figures.push(figure('cap: worst 1-second window ÷ cap (worst device)', worst / cap, '×', { atMost: TARGETS.capWorstWindowAtMost },
      'received bytes on the device\'s interface, sampled every 250 ms: headers and have traffic included'))
    figures.push(figure('cap: average rate ÷ cap (slowest device)', lowest / cap, '×', binds ? { atLeast: TARGETS.capAverageAtLeast } : undefined,
      binds ? 'over each device\'s download' : 'the cap does not bind here'))
  }

  const usage = (phase: PhaseResult, label: string): void => {
    const cpu = phase.devices.map(device => device.cpuSeconds)
    const meanCpu = cpu.reduce((sum, value) => sum + value, 0) / cpu.length
    const transfer = phase.devices.map(device => device.downloadDoneMs !== undefined && device.downloadStartMs !== undefined ? seconds(device.downloadDoneMs - device.downloadStartMs) : 0)
    const system = phase.devices.reduce((sum, device) => sum + device.systemCpuSeconds, 0) / phase.devices.length
    figures.push(figure(`agent CPU per device (${label})`, meanCpu, 's', undefined,
      `mean (${system.toFixed(1)} s of it in the kernel); max ${Math.max(...cpu).toFixed(1)} s; ${(meanCpu / Math.max(1e-9, Math.max(...transfer)) * 100).toFixed(0)} % of a core over the longest download`))
    figures.push(figure(`agent peak RSS (${label})`, Math.max(...phase.devices.map(device => device.peakRssBytes)) / 2 ** 20, 'MiB', undefined, 'largest of the fleet'))
  }
  usage(mesh, 'meshdeploy')
  if (baseline !== undefined) usage(baseline, 'baseline')
  return figures
}

/** Figures of discovery and announcement overhead (many peers on one LAN). */
export function overheadFigures (mesh: PhaseResult, packageBytes: number): Figure[] {
  const figures: Figure[] = []
  if (mesh.discoveryMs !== undefined) figures.push(figure('discovery: until every agent sees all its site peers', seconds(mesh.discoveryMs), 's', undefined, 'mDNS and the coordinator\'s peer list, from the last agent start'))
  if (mesh.idleReceiveBytesPerSecond !== undefined) figures.push(figure('idle traffic received per device', mesh.idleReceiveBytesPerSecond / 1024, 'KiB/s', undefined, 'mDNS, identify, keep-alives, assignments polls'))
  const hostKeys = Object.keys(mesh.samples).filter(key => key.startsWith('host:'))
  // From the task's start: the idle period before it is measured apart.
  const received = hostKeys.reduce((sum, key) => {
    const readings = mesh.samples[key].map(([ms, rx]) => ({ atMs: ms, bytes: rx }))
    return sum + (readings.at(-1)?.bytes ?? 0) - counterAt(readings, 0)
  }, 0)
  const delivered = packageBytes * mesh.devices.length
  figures.push(figure('bytes received by all devices ÷ bytes of package delivered', received / delivered, '×', undefined,
    'interface counters over the phase: chunk data, have/interest messages, framing, TCP/IP headers', '1'))
  return figures
}

/** The chart of a lab run from its phases. */
export function labChartInput (title: string, input: LabFiguresInput): LabChartInput {
  const { meshdeploy: mesh, baseline } = input
  const completionSeconds = [mesh, ...(baseline !== undefined ? [baseline] : [])].flatMap(phase =>
    phase.devices.filter(device => device.downloadDoneMs !== undefined).map(device => ({ mode: phase.mode, seconds: seconds(device.downloadDoneMs!) })))
  const wanCopies = [mesh, ...(baseline !== undefined ? [baseline] : [])].flatMap(phase =>
    phase.wan.map(site => ({ mode: phase.mode, site: site.site, copies: site.rxPayloadBytes / input.packageBytes })))
  const bySource = mesh.devices.flatMap(device => [
    { device: device.hostname, source: 'peers' as const, mebibytes: device.bytesFromPeers / 2 ** 20 },
    { device: device.hostname, source: 'origin' as const, mebibytes: device.bytesFromOrigin / 2 ** 20 }
  ])
  const receiveRates = Object.entries(mesh.samples).filter(([key]) => key.startsWith('host:')).flatMap(([key, readings]) =>
    rateSeries(readings.map(([ms, rx]) => ({ atMs: ms, bytes: rx })), 0).filter(point => point.seconds >= 0).map(point => ({ device: key.slice(5), seconds: point.seconds, megabytesPerSecond: point.bytesPerSecond / 1e6 })))
  return {
    title,
    completionSeconds,
    lowerBoundSeconds: lowerBoundSeconds(input.packageBytes, input.wanMbit, input.capKBps),
    completionTarget: TARGETS.completionRatioAtMost,
    wanCopies,
    copiesTarget: TARGETS.wanCopiesAtMost,
    devicesPerSite: input.devicesPerSite,
    bySource,
    receiveRates,
    ...(input.capKBps !== undefined ? { capMegabytesPerSecond: input.capKBps * 1024 / 1e6 } : {})
  }
}
