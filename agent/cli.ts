import { readFile } from 'node:fs/promises'
import { Command, Option } from 'commander'
import { normalizeFingerprint, type TlsTrust } from '../protocol/index.js'
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
    .option('--ca <file>', 'trust the coordinator\'s certificate if it chains to this CA (PEM); kept in agent.json (env MESHDEPLOY_CA)', process.env.MESHDEPLOY_CA === '' ? undefined : process.env.MESHDEPLOY_CA)
    .option('--pin-sha256 <hex>', 'trust only the coordinator certificate with this SHA-256 fingerprint; kept in agent.json (env MESHDEPLOY_PIN_SHA256)', process.env.MESHDEPLOY_PIN_SHA256 === '' ? undefined : process.env.MESHDEPLOY_PIN_SHA256)
    .option('--insecure-http', 'accept a plain http:// coordinator URL (a lab or loopback only)')
    .option('--clock-skew-seconds <n>', 'tolerated difference between this clock and the coordinator\'s (at most 3600)', positiveInteger)
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addHelpText('after', '\nExample:\n  meshdeploy agent start --data /var/lib/meshdeploy --coordinator https://deploy.example.org:8650 --enroll-token mde_… --site berlin --ca /etc/meshdeploy/ca.pem')
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
      let tls: TlsTrust | undefined
      try {
        if (options.ca !== undefined || options.pinSha256 !== undefined) {
          tls = {}
          if (options.ca !== undefined) tls.caPem = await readFile(options.ca, 'utf8')
          if (options.pinSha256 !== undefined) tls.pinSha256 = normalizeFingerprint(options.pinSha256)
        }
      } catch (error) {
        process.stderr.write(`meshdeploy agent: ${(error as Error).message}\n`)
        process.exitCode = 2
        return
      }
      await runAgent({
        dataDir: options.data,
        ...(tls !== undefined ? { tls } : {}),
        ...(options.insecureHttp === true ? { allowInsecureHttp: true } : {}),
        ...(options.clockSkewSeconds !== undefined ? { clockSkewMs: options.clockSkewSeconds * 1000 } : {}),
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
