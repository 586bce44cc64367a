import '../protocol/polyfill.js'
import { parseArgs } from 'node:util'
import { publish, type ScenarioResult } from './report.js'
import { ingestOrigin } from './scenarios/ingest-origin.js'
import { labScenario, type LabScenarioInit } from './scenarios/lab.js'
import { meshCap } from './scenarios/mesh-cap.js'
import { meshOriginShare } from './scenarios/mesh-origin-share.js'
import { meshThroughput } from './scenarios/mesh-throughput.js'
import { statusIngest } from './scenarios/status-ingest.js'
import { statusWan } from './scenarios/status-wan.js'
import { captureScenario } from './scenarios/capture.js'
import { simScenario } from './scenarios/sim.js'
import { agentCost } from './scenarios/agent-cost.js'
import { storeBackends } from './scenarios/store-backends.js'
import { scaleScenario } from './scenarios/scale.js'

interface Scenario {
  description: string
  run: (options: Record<string, string | undefined>) => Promise<ScenarioResult>
}

/** Every benchmark, by name: `npm run bench -- --scenario NAME`. */
export const SCENARIOS: Record<string, Scenario> = {
  'store-backends': {
    description: 'enroll/s, wake p99 and status records/s of a coordinator on level, on PostgreSQL, and of two coordinators on one PostgreSQL, in one run (--devices, --records-per-device)',
    run: async options => await storeBackends({
      ...(options.devices !== undefined ? { devices: Number(options.devices) } : {}),
      ...(options['records-per-device'] !== undefined ? { recordsPerDevice: Number(options['records-per-device']) } : {})
    })
  },
  'ingest-origin': {
    description: 'upload ingest of a 1 GiB file against sha256sum, and one agent fetching it from the origin on loopback (--size-mib)',
    run: async options => await ingestOrigin(options['size-mib'] !== undefined ? { sizeMiB: Number(options['size-mib']) } : {})
  },
  'mesh-throughput': {
    description: 'one agent fetching from one peer, uncapped, against a raw libp2p noise+yamux stream of the same bytes (--size-mib, --repeats)',
    run: async options => await meshThroughput({
      ...(options['size-mib'] !== undefined ? { sizeMiB: Number(options['size-mib']) } : {}),
      ...(options.repeats !== undefined ? { repeats: Number(options.repeats) } : {})
    })
  },
  'mesh-origin-share': {
    description: 'origin bytes per site ÷ package size when 2, 5 and 10 agents of one site fetch it at once (--size-mib, --agents 2,5,10)',
    run: async options => await meshOriginShare({
      ...(options['size-mib'] !== undefined ? { sizeMiB: Number(options['size-mib']) } : {}),
      ...(options.agents !== undefined ? { agents: options.agents.split(',').map(Number) } : {})
    })
  },
  'mesh-cap': {
    description: 'a capped device\'s wire rate ÷ its cap, average and worst one-second window, from a peer and from the origin (--size-mib, --cap-kbps)',
    run: async options => await meshCap({
      ...(options['size-mib'] !== undefined ? { sizeMiB: Number(options['size-mib']) } : {}),
      ...(options['cap-kbps'] !== undefined ? { capKBps: Number(options['cap-kbps']) } : {})
    })
  },
  'status-ingest': {
    description: 'device-signed status records stored per second by the coordinator from a load generator on loopback, concurrent batches against one at a time (--records, --devices, --batch, --concurrency)',
    run: async options => await statusIngest({
      ...(options.records !== undefined ? { records: Number(options.records) } : {}),
      ...(options.devices !== undefined ? { devices: Number(options.devices) } : {}),
      ...(options.batch !== undefined ? { batch: Number(options.batch) } : {}),
      ...(options.concurrency !== undefined ? { concurrency: Number(options.concurrency) } : {})
    })
  },
  capture: {
    description: 'capture start on a root of 100,000 small files (time, CPU, memory against 10,000 files) against find | xargs sha256sum, capture diff after 1,000 changes, and the capture package against the changed content (--files, --changed)',
    run: async options => await captureScenario({
      ...(options.files !== undefined ? { files: Number(options.files) } : {}),
      ...(options.changed !== undefined ? { changed: Number(options.changed) } : {})
    })
  },
  sim: {
    description: 'discrete-event simulation of one site (the agent\'s picker, election, token bucket and peer set over modelled links): WAN copies, last device ÷ bound, control bytes per device (--devices 100,1000, --size-mib, --wan-mbit, --lan-mbit, --delay-ms, --cap-mbit, --max-peers, --churn, --sample-size, --origin-streams, --seed)',
    run: async options => {
      const number = (name: string): number | undefined => {
        const text = options[name]
        if (text === undefined) return undefined
        const value = Number(text)
        if (!Number.isFinite(value) || value < 0) throw new RangeError(`--${name} must be a number ≥ 0, not ${text}`)
        return value
      }
      const devices = options.devices?.split(',').map(Number)
      if (devices?.some(count => !Number.isInteger(count) || count < 1) === true) throw new RangeError(`--devices takes site sizes, not ${options.devices}`)
      return await simScenario({
        ...(devices !== undefined ? { devices } : {}),
        ...(number('size-mib') !== undefined ? { sizeMiB: number('size-mib') } : {}),
        ...(number('wan-mbit') !== undefined ? { wanMbit: number('wan-mbit') } : {}),
        ...(number('lan-mbit') !== undefined ? { lanMbit: number('lan-mbit') } : {}),
        ...(number('delay-ms') !== undefined ? { wanDelayMs: number('delay-ms') } : {}),
        ...(number('cap-mbit') !== undefined ? { capMbit: number('cap-mbit') } : {}),
        ...(number('max-peers') !== undefined ? { maxPeers: number('max-peers') } : {}),
        ...(number('churn') !== undefined ? { churn: number('churn') } : {}),
        ...(number('sample-size') !== undefined ? { sampleSize: number('sample-size') } : {}),
        ...(number('origin-streams') !== undefined ? { originStreams: number('origin-streams') } : {}),
        ...(number('seed') !== undefined ? { seed: number('seed') } : {})
      })
    }
  },
  'agent-cost': {
    description: 'agent CPU-seconds per 64 MiB on loopback, a site of running agents with the mesh and with --p2p off, beside sha256sum and a raw libp2p stream of the same bytes; start-up CPU, idle CPU, peak RSS (--size-mib, --agents N, --idle-seconds)',
    run: async options => await agentCost({
      ...(options['size-mib'] !== undefined ? { sizeMiB: Number(options['size-mib']) } : {}),
      ...(options.agents !== undefined ? { agents: Number(options.agents) } : {}),
      ...(options['idle-seconds'] !== undefined ? { idleSeconds: Number(options['idle-seconds']) } : {})
    })
  },
  scale: {
    description: 'one coordinator, simulated devices over HTTP (own key and credential each): enrollments/s, polls/s, answer size, CPU per unchanged poll, task → held device p50/p99, RSS; then the coordinator killed and restarted under the held devices, coming back with backoff only (baseline) and with the answers\' spread; at each fleet size in one run (--devices 1000,10000, --held, --sites, --concurrency, --stores level,postgres, --restart off)',
    run: async options => await scaleScenario({
      ...(options.devices !== undefined ? { devices: options.devices.split(',').map(Number) } : {}),
      ...(options.held !== undefined ? { held: Number(options.held) } : {}),
      ...(options.sites !== undefined ? { sites: Number(options.sites) } : {}),
      ...(options.concurrency !== undefined ? { concurrency: Number(options.concurrency) } : {}),
      ...(options.restart !== undefined ? { restart: options.restart !== 'off' } : {}),
      ...(options.stores !== undefined ? { stores: options.stores.split(',').map(store => { if (store !== 'level' && store !== 'postgres') throw new RangeError(`--stores takes level and postgres, not ${store}`); return store }) } : {})
    })
  },
  'status-wan': {
    description: 'status requests reaching the coordinator per site per minute, 20 devices downloading: each reporting directly against the site relay (--agents, --window-seconds)',
    run: async options => await statusWan({
      ...(options.agents !== undefined ? { agents: Number(options.agents) } : {}),
      ...(options['window-seconds'] !== undefined ? { windowSeconds: Number(options['window-seconds']) } : {})
    })
  }
}

/**
 * A lab scenario's settings: its defaults (sized for a 2-core machine),
 * overridden by options given on the command line.
 */
function labSettings (defaults: LabScenarioInit, options: Record<string, string | undefined>): LabScenarioInit {
  const number = (name: string): number | undefined => {
    const text = options[name]
    if (text === undefined) return undefined
    const value = Number(text)
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`--${name} must be a number ≥ 0, not ${text}`)
    return value
  }
  const out: LabScenarioInit = { ...defaults }
  out.sites = number('sites') ?? out.sites
  out.agentsPerSite = number('agents-per-site') ?? out.agentsPerSite
  out.sizeMiB = number('size-mib') ?? out.sizeMiB
  out.wanMbit = number('wan-mbit') ?? out.wanMbit
  out.wanDelayMs = number('delay-ms') ?? out.wanDelayMs
  out.wanLossPercent = number('loss') ?? out.wanLossPercent
  const lan = number('lan-mbit')
  if (lan !== undefined) out.lanMbit = lan
  const cap = number('cap-kbps')
  if (cap !== undefined) out.capKBps = cap
  if (options.baseline !== undefined) out.baseline = options.baseline !== 'off'
  return out
}

const LAB_OPTIONS = '--sites, --agents-per-site, --size-mib, --wan-mbit, --delay-ms, --loss, --lan-mbit, --cap-kbps, --baseline on|off'
const WAN_ONCE: LabScenarioInit = { scenario: 'wan-once', sites: 2, agentsPerSite: 8, sizeMiB: 256, wanMbit: 100, wanDelayMs: 20, wanLossPercent: 0 }

SCENARIOS['wan-once'] = {
  description: `lab: 2 sites × 8 agents in network namespaces, 256 MiB, WAN 100 Mbit/s with 20 ms delay; meshdeploy against every device from the origin and a curl (${LAB_OPTIONS})`,
  run: async options => await labScenario(labSettings(WAN_ONCE, options))
}
SCENARIOS.caps = {
  description: `lab: wan-once with a per-device cap of 2 MiB/s (2048 KB/s): cap adherence from each device's interface every 250 ms (${LAB_OPTIONS})`,
  run: async options => await labScenario(labSettings({ ...WAN_ONCE, scenario: 'caps', capKBps: 2048 }, options))
}
SCENARIOS.churn = {
  description: `lab: wan-once where 2 agents per site join once their site is half done and 2 are killed at 30 % and restarted 5 s later (${LAB_OPTIONS})`,
  run: async options => await labScenario(labSettings({ ...WAN_ONCE, scenario: 'churn', churn: { lateAgentsPerSite: 2, lateAtFraction: 0.5, killedAgentsPerSite: 2, killAtFraction: 0.3, restartAfterMs: 5000 } }, options))
}
SCENARIOS['many-peers'] = {
  description: `lab: one site of 40 agents and an 8 MiB package: discovery time, idle and announcement traffic (${LAB_OPTIONS})`,
  run: async options => await labScenario(labSettings({ ...WAN_ONCE, scenario: 'many-peers', sites: 1, agentsPerSite: 40, sizeMiB: 8, idleMs: 10_000 }, options))
}

const DEFAULT_SCENARIOS = ['ingest-origin']

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', multiple: true },
      list: { type: 'boolean' },
      'size-mib': { type: 'string' },
      repeats: { type: 'string' },
      agents: { type: 'string' },
      'cap-kbps': { type: 'string' },
      records: { type: 'string' },
      stores: { type: 'string' },
      'records-per-device': { type: 'string' },
      devices: { type: 'string' },
      batch: { type: 'string' },
      concurrency: { type: 'string' },
      'window-seconds': { type: 'string' },
      sites: { type: 'string' },
      'agents-per-site': { type: 'string' },
      'wan-mbit': { type: 'string' },
      'delay-ms': { type: 'string' },
      loss: { type: 'string' },
      'lan-mbit': { type: 'string' },
      baseline: { type: 'string' },
      files: { type: 'string' },
      changed: { type: 'string' },
      'idle-seconds': { type: 'string' },
      'cap-mbit': { type: 'string' },
      'max-peers': { type: 'string' },
      churn: { type: 'string' },
      'sample-size': { type: 'string' },
      seed: { type: 'string' },
      'origin-streams': { type: 'string' },
      held: { type: 'string' },
      restart: { type: 'string' }
    },
    allowPositionals: false
  })
  if (values.list === true) {
    for (const [name, scenario] of Object.entries(SCENARIOS)) process.stdout.write(`${name.padEnd(18)} ${scenario.description}\n`)
    return
  }
  const names = values.scenario?.flatMap(value => value.split(',')) ?? DEFAULT_SCENARIOS
  for (const name of names) {
    const scenario = SCENARIOS[name]
    if (scenario === undefined) {
      process.stderr.write(`unknown scenario ${name}; known: ${Object.keys(SCENARIOS).join(', ')}\n`)
      process.exitCode = 2
      return
    }
    process.stdout.write(`== ${name}: ${scenario.description}\n`)
    const { scenario: _names, list: _list, ...options } = values
    await publish(await scenario.run(options))
  }
}

await main()
