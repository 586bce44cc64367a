import { Command, Option } from 'commander'
import { runAgent, type RunAgentOptions } from './main.js'
import { BYTES_PER_KB } from './tasks/runner.js'

function list (value: string): string[] {
  return value.split(',').map(item => item.trim()).filter(item => item !== '')
}

function positiveInteger (value: string): number {
  const number = Number(value)
  if (!Number.isInteger(number) || number < 1) throw new Error(`${value} is not a positive whole number`)
  return number
}

function onOff (value: string): boolean {
  if (value === 'on') return true
  if (value === 'off') return false
  throw new Error(`${value} is neither on nor off`)
}

/**
 * `meshdeploy agent …`: the device side. `overrides` are settings no option
 * reaches (a test wrapper uses them); the meshdeploy command passes none.
 */
export function agentCommand (overrides: Partial<RunAgentOptions> = {}): Command {
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
    .option('--download-concurrency <n>', 'chunks fetched at once from the origin when peer sharing is off', positiveInteger)
    .addOption(new Option('--p2p <on|off>', 'share chunks with site peers over libp2p; off: every byte from the origin').argParser(onOff).default(true, 'on'))
    .option('--listen <multiaddrs>', 'libp2p listen addresses, comma separated (default /ip4/0.0.0.0/tcp/8651)', list)
    .option('--announce <multiaddrs>', 'addresses to announce instead of the listening ones, comma separated', list)
    .addOption(new Option('--mdns <on|off>', 'find site peers on the LAN with multicast DNS').argParser(onOff).default(true, 'on'))
    .addOption(new Option('--peer-list <on|off>', 'dial the site peers the coordinator lists').argParser(onOff).default(true, 'on'))
    .option('--upload-kbps <n>', 'cap on what this device uploads to peers, KB/s of 1024 bytes', positiveInteger)
    .option('--cache-max-mb <n>', 'bound on the chunk cache, MiB (default 10240); packages a task needs stay', positiveInteger)
    .option('--site-cache', 'act as the site\'s cache: fetch the packages of tasks that target the site ahead and keep them')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addHelpText('after', '\nExamples:\n  meshdeploy agent start --data /var/lib/meshdeploy --coordinator https://deploy.example.org:8650 --enroll-token mde_… --site berlin\n  meshdeploy agent start --data /var/lib/meshdeploy --site-cache --upload-kbps 20480 --cache-max-mb 51200')
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
        ...overrides,
        dataDir: options.data,
        coordinatorUrl,
        installRoot: options.installRoot,
        logLevel: options.logLevel,
        ...(options.enrollToken !== undefined ? { enrollToken: options.enrollToken } : {}),
        ...(options.site !== undefined ? { site: options.site } : {}),
        ...(options.groups !== undefined ? { groups: options.groups } : {}),
        ...(options.hostname !== undefined ? { hostname: options.hostname } : {}),
        ...(options.downloadConcurrency !== undefined ? { downloadConcurrency: options.downloadConcurrency } : {}),
        ...(options.cacheMaxMb !== undefined ? { cacheMaxBytes: options.cacheMaxMb * 1024 * 1024 } : {}),
        ...(options.siteCache === true ? { siteCache: true } : {}),
        mesh: options.p2p === false
          ? false
          : {
              ...(overrides.mesh !== false ? overrides.mesh : {}),
              mdns: options.mdns,
              usePeerList: options.peerList,
              ...(options.listen !== undefined ? { listen: options.listen } : {}),
              ...(options.announce !== undefined ? { announce: options.announce } : {}),
              ...(options.uploadKbps !== undefined ? { uploadBytesPerSecond: options.uploadKbps * BYTES_PER_KB } : {})
            }
      })
    })
  return agent
}
