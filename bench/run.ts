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

interface Scenario {
  description: string
  run: (options: Record<string, string | undefined>) => Promise<ScenarioResult>
}

/** Every benchmark, by name: `npm run bench -- --scenario NAME`. */
export const SCENARIOS: Record<string, Scenario> = {
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
      baseline: { type: 'string' }
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
