import { Command, Option } from 'commander'
import { runAgent } from './main.js'

function list (value: string): string[] {
  return value.split(',').map(item => item.trim()).filter(item => item !== '')
}

function positiveInteger (value: string): number {
  const number = Number(value)
  if (!Number.isInteger(number) || number < 1) throw new Error(`${value} is not a positive whole number`)
  return number
}

/** `meshdeploy agent …`: the device side. */
export function agentCommand (): Command {
  const agent = new Command('agent').description('run the device agent')
  agent.command('start')
    .description('enroll (first start) and run the agent until stopped')
    .requiredOption('--data <dir>', 'data folder: identity, task state, chunk cache')
    .option('--coordinator <url>', 'coordinator URL (needed at enrollment; afterwards the enrolled one is used)', process.env.MESHDEPLOY_URL)
    .option('--enroll-token <token>', 'enrollment token, for the first start', process.env.MESHDEPLOY_ENROLL_TOKEN)
    .option('--site <name>', 'site this device belongs to')
    .option('--groups <a,b>', 'static groups, comma separated', list)
    .option('--hostname <name>', 'name to enroll under (default: the host name)')
    .option('--install-root <dir>', 'folder that absolute install paths are resolved under', '/')
    .option('--download-concurrency <n>', 'chunks fetched at once', positiveInteger)
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addHelpText('after', '\nExample:\n  meshdeploy agent start --data /var/lib/meshdeploy --coordinator https://deploy.example.org:8650 --enroll-token mde_… --site berlin')
    .action(async options => {
      let coordinatorUrl: string | undefined = options.coordinator
      if (coordinatorUrl === undefined) {
        const { loadIdentity } = await import('./identity.js')
        coordinatorUrl = (await loadIdentity(options.data))?.coordinatorUrl
      }
      if (coordinatorUrl === undefined) {
        process.stderr.write('meshdeploy agent: --coordinator is needed for the first start\n')
        process.exitCode = 2
        return
      }
      await runAgent({
        dataDir: options.data,
        coordinatorUrl,
        installRoot: options.installRoot,
        logLevel: options.logLevel,
        ...(options.enrollToken !== undefined ? { enrollToken: options.enrollToken } : {}),
        ...(options.site !== undefined ? { site: options.site } : {}),
        ...(options.groups !== undefined ? { groups: options.groups } : {}),
        ...(options.hostname !== undefined ? { hostname: options.hostname } : {}),
        ...(options.downloadConcurrency !== undefined ? { downloadConcurrency: options.downloadConcurrency } : {})
      })
    })
  return agent
}
