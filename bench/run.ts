import '../protocol/polyfill.js'
import { parseArgs } from 'node:util'
import { publish, type ScenarioResult } from './report.js'
import { ingestOrigin } from './scenarios/ingest-origin.js'
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
      'window-seconds': { type: 'string' }
    },
    allowPositionals: false
  })
  if (values.list === true) {
    for (const [name, scenario] of Object.entries(SCENARIOS)) process.stdout.write(`${name.padEnd(16)} ${scenario.description}\n`)
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
    await publish(await scenario.run({
      'size-mib': values['size-mib'],
      repeats: values.repeats,
      agents: values.agents,
      'cap-kbps': values['cap-kbps'],
      records: values.records,
      devices: values.devices,
      batch: values.batch,
      concurrency: values.concurrency,
      'window-seconds': values['window-seconds']
    }))
  }
}

await main()
