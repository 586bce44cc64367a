import '../protocol/polyfill.js'
import { parseArgs } from 'node:util'
import { publish, type ScenarioResult } from './report.js'
import { ingestOrigin } from './scenarios/ingest-origin.js'

interface Scenario {
  description: string
  run: (options: Record<string, string | undefined>) => Promise<ScenarioResult>
}

/** Every benchmark, by name: `npm run bench -- --scenario NAME`. */
export const SCENARIOS: Record<string, Scenario> = {
  'ingest-origin': {
    description: 'upload ingest of a 1 GiB file against sha256sum, and one agent fetching it from the origin on loopback (--size-mib)',
    run: async options => await ingestOrigin(options['size-mib'] !== undefined ? { sizeMiB: Number(options['size-mib']) } : {})
  }
}

const DEFAULT_SCENARIOS = ['ingest-origin']

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', multiple: true },
      list: { type: 'boolean' },
      'size-mib': { type: 'string' }
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
    await publish(await scenario.run({ 'size-mib': values['size-mib'] }))
  }
}

await main()
