import { cpuUsage } from 'node:process'
import { DEFAULT_ORIGIN_STREAMS } from '../../agent/download/origin-lanes.js'
import { figure, type Figure, type ScenarioResult } from '../report.js'
import { SiteSimulation, type SiteModel, type SiteOutcome } from '../sim/site.js'

export interface SimOptions {
  /** Site sizes to simulate. @default [100, 1000] */
  devices?: number[]
  /** @default 64 */
  sizeMiB?: number
  /** @default 100 */
  wanMbit?: number
  /** @default 1000 */
  lanMbit?: number
  /** @default 10 (one way) */
  wanDelayMs?: number
  /** Per-device cap, Mbit/s; absent: none. */
  capMbit?: number
  /** @default the agent's (16) */
  maxPeers?: number
  /** Devices of each site killed at 30 % of the bound and restarted 5 s later, and devices joining at half of it. @default 0 */
  churn?: number
  /** Each device learns this many site peers from the coordinator instead of every peer by mDNS. */
  sampleSize?: number
  /** Chunks of a device streaming from the origin at once; 0: all of them. @default the agent's (1) */
  originStreams?: number
  /** @default 1 */
  seed?: number
}

const MBIT = 1_000_000 / 8

/**
 * Sites beyond what two cores can run as processes: the agent's picker,
 * origin election, token bucket and peer-set policy, each device its own,
 * over modelled links in virtual time. Figures per site size: WAN copies,
 * last device ÷ max(S/W, S/C), control bytes per device; the baseline of
 * the same run is every device fetching from the origin (N copies, the last
 * one after N × S/W).
 */
export async function simScenario (options: SimOptions = {}): Promise<ScenarioResult> {
  const startedAt = new Date()
  const sizes = options.devices ?? [100, 1000]
  const parameters = {
    devices: sizes,
    sizeMiB: options.sizeMiB ?? 64,
    wanMbit: options.wanMbit ?? 100,
    lanMbit: options.lanMbit ?? 1000,
    wanDelayMs: options.wanDelayMs ?? 10,
    ...(options.capMbit !== undefined ? { capMbit: options.capMbit } : {}),
    ...(options.maxPeers !== undefined ? { maxPeers: options.maxPeers } : {}),
    ...(options.sampleSize !== undefined ? { sampleSize: options.sampleSize } : {}),
    churn: options.churn ?? 0,
    originStreams: options.originStreams ?? DEFAULT_ORIGIN_STREAMS,
    seed: options.seed ?? 1
  }
  const figures: Figure[] = []
  const raw: Record<string, unknown> = {}
  for (const devices of sizes) {
    const packageBytes = parameters.sizeMiB * 1024 * 1024
    const wanBytesPerSecond = parameters.wanMbit * MBIT
    const capBytesPerSecond = options.capMbit !== undefined ? options.capMbit * MBIT : undefined
    const boundMs = Math.max(packageBytes / wanBytesPerSecond, capBytesPerSecond !== undefined ? packageBytes / capBytesPerSecond : 0) * 1000
    const model: SiteModel = {
      devices,
      packageBytes,
      wanBytesPerSecond,
      lanBytesPerSecond: parameters.lanMbit * MBIT,
      wanDelayMs: parameters.wanDelayMs,
      ...(capBytesPerSecond !== undefined ? { capBytesPerSecond } : {}),
      ...(options.maxPeers !== undefined ? { maxPeers: options.maxPeers } : {}),
      ...(options.sampleSize !== undefined ? { sampleSize: options.sampleSize } : {}),
      ...(parameters.churn > 0 ? { churn: { killed: parameters.churn, killAtMs: 0.3 * boundMs, restartAfterMs: 5000, late: parameters.churn, lateAtMs: 0.5 * boundMs } } : {}),
      originStreams: parameters.originStreams,
      seed: parameters.seed
    }
    const cpuBefore = cpuUsage()
    const wallBefore = performance.now()
    const outcome: SiteOutcome = new SiteSimulation(model).run()
    const cpu = cpuUsage(cpuBefore)
    const cpuSeconds = (cpu.user + cpu.system) / 1e6
    const wallSeconds = (performance.now() - wallBefore) / 1000
    raw[`site-${devices}`] = { model, outcome, cpuSeconds, wallSeconds }
    const alone = devices * packageBytes / wanBytesPerSecond * 1000
    const prefix = `${devices} devices`
    figures.push(
      figure(`${prefix}: devices that succeeded`, outcome.succeeded, `of ${devices}`, { atLeast: devices }),
      figure(`${prefix}: WAN copies`, Number(outcome.wanCopies.toFixed(3)), 'copies', { atMost: 1.02 }, `baseline every device from the origin: ${devices} copies; ${(outcome.wanBytesLost / 2 ** 20).toFixed(1)} MiB lost to kills`, '1 copy'),
      figure(`${prefix}: last device ÷ bound`, Number((outcome.lastDoneMs / boundMs).toFixed(3)), '×', { atMost: 1.5 }, `last ${(outcome.lastDoneMs / 1000).toFixed(2)} s, median ${(outcome.medianDoneMs / 1000).toFixed(2)} s; baseline every device from the origin: ${(alone / boundMs).toFixed(0)} × (speed-up ${(alone / outcome.lastDoneMs).toFixed(1)} ×)`, `max(S/W, S/C) = ${(boundMs / 1000).toFixed(2)} s`),
      figure(`${prefix}: control bytes per device`, Math.round(outcome.controlBytesPerDevice), 'bytes', undefined, `${(outcome.controlBytesPerDevice / outcome.dataBytesPerDevice * 100).toFixed(2)} % of package bytes received (have/interest/fetching, piece framing; status gossip not modelled)`),
      figure(`${prefix}: most connections of a device`, outcome.maxConnections, 'connections', { atMost: options.maxPeers ?? 16 }),
      figure(`${prefix}: origin fetches (elected / fallback / spare)`, outcome.originFetches.elected + outcome.originFetches.fallback + outcome.originFetches.spare, 'fetches', undefined, `${outcome.originFetches.elected} / ${outcome.originFetches.fallback} / ${outcome.originFetches.spare} for ${Math.ceil(packageBytes / 2 ** 20)} chunks`),
      figure(`${prefix}: simulator CPU`, Number(cpuSeconds.toFixed(1)), 'CPU-s', undefined, `${wallSeconds.toFixed(1)} s wall, ${outcome.events} events`)
    )
  }
  return {
    scenario: 'sim',
    startedAt: startedAt.toISOString(),
    durationMs: Date.now() - startedAt.getTime(),
    parameters,
    figures,
    raw
  }
}
