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
  agent.command('install-service')
    .description('enroll (when given a token) and install the agent as a systemd service, enabled and started')
    .requiredOption('--data <dir>', 'data folder of the agent')
    .option('--coordinator <url>', 'coordinator URL, for enrollment', process.env.MESHDEPLOY_URL)
    .option('--enroll-token <token>', 'enroll now, so the unit holds no secret', process.env.MESHDEPLOY_ENROLL_TOKEN)
    .option('--site <name>', 'site this device belongs to')
    .option('--groups <a,b>', 'static groups, comma separated', list)
    .option('--install-root <dir>', 'folder that absolute install paths are resolved under')
    .option('--name <name>', 'unit name', 'meshdeploy-agent')
    .option('--unit-dir <dir>', 'where unit files go', '/etc/systemd/system')
    .option('--no-enable', 'write the unit but do not enable or start it')
    .addHelpText('after', '\nExample:\n  meshdeploy agent install-service --data /var/lib/meshdeploy-agent --coordinator https://deploy.example.org:8650 --enroll-token mde_… --site berlin')
    .action(async options => {
      const { resolve } = await import('node:path')
      const { fileURLToPath } = await import('node:url')
      const { installService } = await import('./service-unit.js')
      const dataDir = resolve(options.data)
      try {
        if (options.enrollToken !== undefined) {
          if (options.coordinator === undefined) throw new Error('--coordinator is needed to enroll')
          const { CoordinatorClient } = await import('./coordinator-client.js')
          const { loadOrEnroll } = await import('./identity.js')
          const { AGENT_VERSION } = await import('./agent.js')
          const client = new CoordinatorClient({ url: options.coordinator })
          const { identity, enrolled } = await loadOrEnroll({
            dataDir, client, enrollToken: options.enrollToken, agentVersion: AGENT_VERSION,
            ...(options.site !== undefined ? { site: options.site } : {}),
            ...(options.groups !== undefined ? { groups: options.groups } : {})
          })
          client.close()
          process.stdout.write(`${enrolled ? 'enrolled' : 'already enrolled'} as ${identity.deviceId} (site ${identity.site})\n`)
        }
        const bin = resolve(fileURLToPath(import.meta.url), '../../../bin/meshdeploy.js')
        const command = [process.execPath, bin, 'agent', 'start', '--data', dataDir]
        if (options.installRoot !== undefined) command.push('--install-root', resolve(options.installRoot))
        await installService({ name: options.name, unitDir: options.unitDir, command, enable: options.enable !== false, log: line => { process.stdout.write(line + '\n') } })
      } catch (error) {
        process.stderr.write(`meshdeploy agent install-service: ${(error as Error).message}\n`)
        process.exitCode = 1
      }
    })
  return agent
}
