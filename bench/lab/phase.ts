import pLimit from 'p-limit'
import type { LabAgent, LabFleet } from './fleet.js'
import { counterAt, counterRates, type CounterSample } from './rates.js'
import { CounterSampler } from './sampler.js'
import { DEFAULT_MAX_PEERS } from '../../agent/p2p/peer-set.js'

/** Agents started at once: more only slows each start on a small machine. */
const START_CONCURRENCY = 8
const POLL_INTERVAL_MS = 250

/** Agents that join after the task began, and agents killed in the middle of their download. */
/** Time between the site being connected and the idle window. */
const IDLE_SETTLE_MS = 10_000

export interface ChurnPlan {
  /** Agents per site (the last hosts of each site) that start only once a device of their site has received `lateAtFraction` of the package (by its interface counters). */
  lateAgentsPerSite: number
  /** @default 0.5 */
  lateAtFraction?: number
  /** Agents per site (the first hosts) killed with SIGKILL once they have received `killAtFraction` of the package (by their interface counters). */
  killedAgentsPerSite: number
  /** @default 0.3 */
  killAtFraction?: number
  /** A killed agent starts again after this long (and resumes). @default 5000 */
  restartAfterMs?: number
}

export interface PhaseInit {
  fleet: LabFleet
  /** `meshdeploy`: peer sharing on; `baseline`: every agent fetches everything from the origin (`--p2p off`). */
  mode: 'meshdeploy' | 'baseline'
  packageId: string
  packageBytes: number
  /** The task's per-device cap, KB/s of 1024 bytes. */
  capKBps?: number
  churn?: ChurnPlan
  /** Counters are read for this long with every agent up and no task, to measure idle traffic. @default 0 */
  idleMs?: number
  /** @default 30 minutes */
  timeoutMs?: number
}

export type DeviceRole = 'steady' | 'late' | 'killed'

/** One device's part in a phase; times are milliseconds after the task was created. */
export interface DeviceOutcome {
  hostname: string
  site: string
  role: DeviceRole
  state: string
  /** When its agent started (late joiners), or 0. */
  startedMs: number
  downloadStartMs?: number
  /** The whole package held and verified: the device's `verifying` record. */
  downloadDoneMs?: number
  /** The task done on the device (files distributed). */
  succeededMs?: number
  bytesFromPeers: number
  bytesFromOrigin: number
  /** What its agent processes used in this phase (summed CPU; the largest peak). */
  cpuSeconds: number
  systemCpuSeconds: number
  peakRssBytes: number
  /** Its status records, as the coordinator stored them: state, when (ms after the task was created), attempt, bytes. */
  records: Array<{ state: string, atMs: number, attempt: number, bytesDone: number, bytesFromPeers: number, bytesFromOrigin: number }>
  /** Its LAN interface's received bytes while it downloaded (wire bytes: everything it received). */
  receive?: { totalBytes: number, averageBytesPerSecond: number, worstWindowBytesPerSecond: number }
}

export interface PhaseResult {
  mode: PhaseInit['mode']
  /** When the task was created, epoch ms. */
  startedAt: number
  /** Until every device settled. */
  durationMs: number
  /** Until every started agent saw all its started site peers (meshdeploy only). */
  discoveryMs?: number
  /** Bytes received per device per second while idle (idleMs > 0). */
  idleReceiveBytesPerSecond?: number
  taskId: string
  devices: DeviceOutcome[]
  /**
   * Per site, during the phase: bytes into the site (WAN rx on the router)
   * and out of it; the packets into it, and the payload they carried (bytes
   * less each packet's Ethernet, IPv4 and TCP headers).
   */
  wan: Array<{ site: string, rxBytes: number, txBytes: number, rxPackets: number, rxPayloadBytes: number }>
  /** Every reading of the counters, by key (`wan:site-1`, `host:s1-pc1`), relative to the phase's start. */
  samples: Record<string, Array<[ms: number, rxBytes: number, txBytes: number]>>
}

/**
 * Headers an interface counts once per packet of a TCP/IPv4 flow: Ethernet
 * 14, IPv4 20, TCP 20 and the timestamp option 12 (on by default in Linux).
 * A GSO super-packet is counted as one packet with one set of headers, so
 * bytes less packets × this is the payload, however the kernel batched it.
 */
export const TCP_HEADER_BYTES_PER_PACKET = 66

export function payloadBytes (bytes: number, packets: number): number {
  return bytes - packets * TCP_HEADER_BYTES_PER_PACKET
}

const SETTLED = new Set(['succeeded', 'succeeded-reboot-pending', 'already-installed', 'not-applicable', 'cancelled', 'expired'])

function roleOf (agent: LabAgent, index: number, perSite: number, churn?: ChurnPlan): DeviceRole {
  if (churn === undefined) return 'steady'
  if (index >= perSite - churn.lateAgentsPerSite) return 'late'
  if (index < churn.killedAgentsPerSite) return 'killed'
  return 'steady'
}

/**
 * One distribution of a package to every agent of the fleet, measured where
 * the traffic flows: the WAN counters of each site router, each host's LAN
 * interface every 250 ms, the agents' own status records (times, bytes by
 * source), and each agent process's CPU and peak memory.
 */
export async function runPhase (init: PhaseInit): Promise<PhaseResult> {
  const { fleet } = init
  const p2p = init.mode === 'meshdeploy'
  const perSite = fleet.lab.sites[0].hosts.length
  const roles = new Map<LabAgent, DeviceRole>()
  for (const agent of fleet.agents) roles.set(agent, roleOf(agent, agent.host.index - 1, perSite, init.churn))
  const initial = fleet.agents.filter(agent => roles.get(agent) !== 'late')
  const limit = pLimit(START_CONCURRENCY)
  await Promise.all(initial.map(async agent => { await limit(async () => { await fleet.start(agent, { p2p }) }) }))

  let discoveryMs: number | undefined
  if (p2p) {
    // Every other agent of a small site; in a site larger than the peer set, the connections an agent dials itself (3/8 of its bound).
    const startedPerSite = (agent: LabAgent): number => Math.min(initial.filter(other => other.site === agent.site).length - 1, Math.ceil(DEFAULT_MAX_PEERS * 3 / 8))
    discoveryMs = await fleet.connected(initial, startedPerSite)
  }

  const sampler = new CounterSampler({
    read: () => {
      const out: Record<string, { rxBytes: number, txBytes: number, rxPackets?: number }> = {}
      for (const site of fleet.lab.sites) out[`wan:site-${site.index}`] = fleet.lab.wanCountersNow(site.index)
      for (const agent of fleet.agents) out[`host:${agent.hostname}`] = fleet.lab.hostCountersNow(agent.host)
      return out
    }
  })
  sampler.start()
  let idleReceiveBytesPerSecond: number | undefined
  if ((init.idleMs ?? 0) > 0) {
    // Idle is the steady state: the last agents' start-up (their first mDNS queries, dials, peer lists) settles first.
    await new Promise(resolve => setTimeout(resolve, IDLE_SETTLE_MS))
    const from = Date.now()
    await new Promise(resolve => setTimeout(resolve, init.idleMs))
    sampler.sample()
    const to = Date.now()
    const perDevice = initial.map(agent => counterRates(sampler.rx.get(`host:${agent.hostname}`) ?? [], from, to).averageBytesPerSecond)
    idleReceiveBytesPerSecond = perDevice.reduce((sum, value) => sum + value, 0) / perDevice.length
  }

  const startedAt = Date.now()
  const startedMs = new Map<LabAgent, number>()
  const churnWork: Array<Promise<void>> = []
  let churnFailure: Error | undefined
  const killed = new Set<LabAgent>()
  const lateStarted = new Set<string>()
  let taskId = ''
  try {
    const task = await fleet.api.post('/v1/tasks', {
      packageId: init.packageId,
      action: 'distribute-files',
      destination: `/srv/${init.mode}`,
      targets: { deviceIds: fleet.agents.map(agent => agent.hostname) },
      maxAttempts: 3,
      ...(init.capKBps !== undefined ? { bandwidthKBps: init.capKBps } : {})
    })
    taskId = task.id as string
    const deadline = startedAt + (init.timeoutMs ?? 30 * 60_000)
    for (;;) {
      const { devices: rows } = await fleet.api.get(`/v1/tasks/${taskId}/devices`)
      const byHost = new Map<string, any>(rows.map((row: any) => [row.hostname, row]))
      if (init.churn !== undefined) {
        // From the interface counters, which run ahead of the status records the devices deliver in batches.
        const received = (agent: LabAgent): number => {
          const readings = sampler.rx.get(`host:${agent.hostname}`) ?? []
          return readings.length === 0 ? 0 : readings[readings.length - 1].bytes - counterAt(readings, startedAt)
        }
        churnStep(init, fleet, roles, received, startedAt, startedMs, killed, lateStarted, churnWork, p2p, error => { churnFailure ??= error })
      }
      if (churnFailure !== undefined) throw churnFailure
      const settled = fleet.agents.every(agent => {
        const row = byHost.get(agent.hostname)
        return row !== undefined && (SETTLED.has(row.state) || (row.state === 'failed' && row.final === true))
      })
      if (settled) break
      if (Date.now() > deadline) throw new Error(`the ${init.mode} phase did not settle in ${((init.timeoutMs ?? 0) / 60_000).toFixed(0)} minutes`)
      await new Promise(resolve => setTimeout(resolve, POLL_INTERVAL_MS))
    }
  } finally {
    await Promise.allSettled(churnWork)
    sampler.stop()
  }
  const durationMs = Date.now() - startedAt
  const { devices: rows } = await fleet.api.get(`/v1/tasks/${taskId}/devices`)
  const byHost = new Map<string, any>(rows.map((row: any) => [row.hostname, row]))
  await Promise.all(fleet.agents.map(async agent => { await fleet.stop(agent) }))

  const devices: DeviceOutcome[] = []
  for (const agent of fleet.agents) {
    const row = byHost.get(agent.hostname)
    const { records } = await fleet.api.get(`/v1/tasks/${taskId}/devices/${agent.deviceId!}/history`)
    const firstAt = (state: string): number | undefined => records.find((record: any) => record.state === state)?.at
    const lastAt = (state: string): number | undefined => records.findLast((record: any) => record.state === state)?.at
    const relative = (at: number | undefined): number | undefined => at === undefined ? undefined : at - startedAt
    const outcome: DeviceOutcome = {
      hostname: agent.hostname,
      site: agent.site,
      role: roles.get(agent)!,
      state: row?.state ?? 'missing',
      startedMs: startedMs.get(agent) ?? 0,
      bytesFromPeers: row?.bytesFromPeers ?? 0,
      bytesFromOrigin: row?.bytesFromOrigin ?? 0,
      cpuSeconds: agent.usage.reduce((sum, usage) => sum + usage.cpuSeconds, 0),
      systemCpuSeconds: agent.usage.reduce((sum, usage) => sum + usage.systemCpuSeconds, 0),
      peakRssBytes: Math.max(0, ...agent.usage.map(usage => usage.peakRssBytes)),
      records: records.map((record: any) => ({ state: record.state, atMs: record.at - startedAt, attempt: record.attempt, bytesDone: record.bytesDone, bytesFromPeers: record.bytesFromPeers, bytesFromOrigin: record.bytesFromOrigin }))
    }
    const downloadStart = relative(firstAt('downloading'))
    const downloadDone = relative(lastAt('verifying'))
    const succeeded = relative(lastAt('succeeded'))
    if (downloadStart !== undefined) outcome.downloadStartMs = downloadStart
    if (downloadDone !== undefined) outcome.downloadDoneMs = downloadDone
    if (succeeded !== undefined) outcome.succeededMs = succeeded
    if (downloadStart !== undefined && downloadDone !== undefined) {
      outcome.receive = counterRates(sampler.rx.get(`host:${agent.hostname}`) ?? [], startedAt + downloadStart, startedAt + downloadDone)
    }
    devices.push(outcome)
  }
  const wan = fleet.lab.sites.map(site => {
    const key = `wan:site-${site.index}`
    const delta = (samples: CounterSample[] | undefined): number => {
      const inside = (samples ?? []).filter(sample => sample.atMs >= startedAt)
      const before = (samples ?? []).filter(sample => sample.atMs < startedAt).at(-1) ?? inside[0]
      return inside.length === 0 ? 0 : inside[inside.length - 1].bytes - before.bytes
    }
    const rxBytes = delta(sampler.rx.get(key))
    const rxPackets = delta(sampler.rxPackets.get(key))
    return { site: `site-${site.index}`, rxBytes, txBytes: delta(sampler.tx.get(key)), rxPackets, rxPayloadBytes: payloadBytes(rxBytes, rxPackets) }
  })
  const samples: PhaseResult['samples'] = {}
  for (const [key, list] of sampler.rx) {
    const tx = sampler.tx.get(key) ?? []
    samples[key] = list.map((sample, index) => [sample.atMs - startedAt, sample.bytes - list[0].bytes, (tx[index]?.bytes ?? 0) - (tx[0]?.bytes ?? 0)])
  }
  return {
    mode: init.mode,
    startedAt,
    durationMs,
    ...(discoveryMs !== undefined ? { discoveryMs } : {}),
    ...(idleReceiveBytesPerSecond !== undefined ? { idleReceiveBytesPerSecond } : {}),
    taskId,
    devices,
    wan,
    samples
  }
}

/** Starts late joiners and kills (then restarts) agents as the plan says, from what each device has received so far. */
function churnStep (
  init: PhaseInit, fleet: LabFleet, roles: Map<LabAgent, DeviceRole>, received: (agent: LabAgent) => number, startedAt: number,
  startedMs: Map<LabAgent, number>, killed: Set<LabAgent>, lateStarted: Set<string>, work: Array<Promise<void>>, p2p: boolean,
  failed: (error: Error) => void
): void {
  const plan = init.churn!
  const lateAt = (plan.lateAtFraction ?? 0.5) * init.packageBytes
  const killAt = (plan.killAtFraction ?? 0.3) * init.packageBytes
  for (const site of new Set(fleet.agents.map(agent => agent.site))) {
    if (lateStarted.has(site)) continue
    const leading = Math.max(0, ...fleet.agents.filter(agent => agent.site === site).map(received))
    if (leading < lateAt) continue
    lateStarted.add(site)
    for (const agent of fleet.agents.filter(candidate => candidate.site === site && roles.get(candidate) === 'late')) {
      startedMs.set(agent, Date.now() - startedAt)
      work.push(fleet.start(agent, { p2p }).catch(failed))
    }
  }
  for (const agent of fleet.agents) {
    if (roles.get(agent) !== 'killed' || killed.has(agent)) continue
    if (agent.process === undefined || received(agent) < killAt) continue
    killed.add(agent)
    work.push((async () => {
      await fleet.stop(agent, 'kill')
      await new Promise(resolve => setTimeout(resolve, plan.restartAfterMs ?? 5000))
      await fleet.start(agent, { p2p })
    })().catch(failed))
  }
}
