import { readFile } from 'node:fs/promises'
import { Command, Option } from 'commander'
import { normalizeFingerprint, splitRunArgs, type TlsTrust } from '../protocol/index.js'
import { runAgent, type RunAgentOptions } from './main.js'
import { parseMetricsListen } from './metrics-listen.js'
import { BYTES_PER_KB } from './tasks/runner.js'
import { AGENT_VERSION } from './version.js'
import { optionValuesOf, parseRunAs, readAgentConfig } from './config-file.js'

function list (value: string): string[] {
  return value.split(',').map(item => item.trim()).filter(item => item !== '')
}

function positiveInteger (value: string): number {
  const number = Number(value)
  if (!Number.isInteger(number) || number < 1) throw new Error(`${value} is not a positive whole number`)
  return number
}

/** An environment variable, with an empty value read as unset. */
function environment (name: string): string | undefined {
  const value = process.env[name]
  return value === undefined || value === '' ? undefined : value
}

/** Adds the options that say how the coordinator's certificate is trusted. */
function withTrustOptions (command: Command): Command {
  return command
    .option('--ca <file>', 'trust the coordinator\'s certificate if it chains to this CA (PEM); kept in agent.json (env MESHDEPLOY_CA)', environment('MESHDEPLOY_CA'))
    .option('--pin-sha256 <hex>', 'trust only the coordinator certificate with this SHA-256 fingerprint; kept in agent.json (env MESHDEPLOY_PIN_SHA256)', environment('MESHDEPLOY_PIN_SHA256'))
    .option('--insecure-http', 'accept a plain http:// coordinator URL (a lab or loopback only)')
}

/** The trust the options name, or undefined when they name none (agent.json then says). */
async function trustFrom (options: { ca?: string, pinSha256?: string }): Promise<TlsTrust | undefined> {
  if (options.ca === undefined && options.pinSha256 === undefined) return undefined
  const tls: TlsTrust = {}
  if (options.ca !== undefined) tls.caPem = await readFile(options.ca, 'utf8')
  if (options.pinSha256 !== undefined) tls.pinSha256 = normalizeFingerprint(options.pinSha256)
  return tls
}

/** Runs a command that talks to the coordinator with this device's identity (the agent may be running). */
async function withDevice (options: { data: string, insecureHttp?: boolean }, body: (client: import('./coordinator-client.js').CoordinatorClient) => Promise<void>): Promise<void> {
  const dataDir = options.data
  const { loadIdentity } = await import('./identity.js')
  const { CoordinatorClient } = await import('./coordinator-client.js')
  const { describeError } = await import('../protocol/index.js')
  const identity = await loadIdentity(dataDir).catch(() => undefined)
  if (identity === undefined) {
    process.stderr.write(`meshdeploy agent: no enrolled agent in ${dataDir}; start it once with --enroll-token\n`)
    process.exitCode = 2
    return
  }
  let client: import('./coordinator-client.js').CoordinatorClient | undefined
  try {
    client = new CoordinatorClient({ url: identity.coordinatorUrl, credential: identity.credential, tls: identity.tls, allowInsecureHttp: options.insecureHttp === true })
    await body(client)
  } catch (error) {
    const status = (error as { status?: number }).status
    process.stderr.write(`meshdeploy agent: ${describeError(error)}\n`)
    process.exitCode = status !== undefined && status < 500 ? 3 : 4
  } finally {
    client?.close()
  }
}

/** Options whose default comes from the environment: a config file does not override them when set. */
const ENVIRONMENT_BACKED = new Set(['coordinator', 'enrollToken', 'ca', 'pinSha256', 'swarmKey'])

/** The options of `agent start` with a config file's settings under them: the command line and the environment win. */
function withConfigFile (options: Record<string, any>, command: Command, fileValues: Record<string, unknown>): Record<string, any> {
  const merged = { ...options }
  for (const [key, value] of Object.entries(fileValues)) {
    const source = command.getOptionValueSource(key)
    if (source === 'cli' || source === 'env') continue
    if (ENVIRONMENT_BACKED.has(key) && options[key] !== undefined) continue
    merged[key] = value
  }
  return merged
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
  const agent = new Command('agent').description('run the device agent; request self-service packages').version(AGENT_VERSION)
  withTrustOptions(agent.command('start'))
    .description('enroll (first start) and run the agent until stopped')
    .option('--config <file>', 'YAML file with any of these options by their camelCase names (data, coordinator, enrollToken, site, listen, …; the agent packages install /etc/meshdeploy/agent.yaml); options given here or in the environment win')
    .option('--data <dir>', 'data folder: identity, task state, chunk cache (needed here or in the config file)')
    .option('--coordinator <url>', 'coordinator URL (needed at enrollment; afterwards the enrolled one is used)', process.env.MESHDEPLOY_URL)
    .option('--enroll-token <token>', 'enrollment token, for the first start', process.env.MESHDEPLOY_ENROLL_TOKEN)
    .option('--site <name>', 'site this device belongs to')
    .option('--groups <a,b>', 'static groups, comma separated', list)
    .option('--hostname <name>', 'name to enroll under (default: the host name)')
    .option('--install-root <dir>', 'folder that absolute install paths are resolved under', '/')
    .option('--package-root <dir>', 'root dpkg and rpm install under (default: the install root; / for the system)')
    .option('--download-concurrency <n>', 'chunks fetched at once from the origin when peer sharing is off', positiveInteger)
    .addOption(new Option('--p2p <on|off>', 'share chunks with site peers over libp2p; off: every byte from the origin').argParser(onOff).default(true, 'on'))
    .option('--listen <multiaddrs>', 'libp2p listen addresses, comma separated (default /ip4/0.0.0.0/tcp/8651)', list)
    .option('--announce <multiaddrs>', 'addresses to announce instead of the listening ones, comma separated', list)
    .addOption(new Option('--mdns <on|off>', 'find site peers on the LAN with multicast DNS').argParser(onOff).default(true, 'on'))
    .addOption(new Option('--peer-list <on|off>', 'dial the site peers the coordinator lists').argParser(onOff).default(true, 'on'))
    .addOption(new Option('--status-gossip <on|off>', 'send status records up through the site\'s gossip and its elected relay; off: each to the coordinator directly').argParser(onOff).default(true, 'on'))
    .option('--upload-kbps <n>', 'cap on what this device uploads to peers, KB/s of 1024 bytes', positiveInteger)
    .option('--max-peers <n>', 'connections to site peers kept at most (default 16): a bounded, rotating set rather than the whole site', positiveInteger)
    .option('--swarm-key <file>', 'private network: encrypt every peer connection with this pre-shared key (meshdeploy agent swarm-key); peers without it are refused (env MESHDEPLOY_SWARM_KEY)', environment('MESHDEPLOY_SWARM_KEY'))
    .option('--cache-max-mb <n>', 'bound on the chunk cache, MiB (default 10240); packages a task needs stay', positiveInteger)
    .option('--site-cache', 'act as the site\'s cache: fetch the packages of tasks that target the site ahead and keep them')
    .option('--metrics-listen <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (a bare PORT listens on 127.0.0.1); off unless given', parseMetricsListen)
    .option('--clock-skew-seconds <n>', 'tolerated difference between this clock and the coordinator\'s (at most 3600)', positiveInteger)
    .option('--time-zone <zone>', 'IANA zone that maintenance windows without a zone of their own are evaluated in (default: the system\'s)')
    .option('--vpn-interfaces <prefixes>', 'name prefixes of VPN interfaces, comma separated (default tun,tap,wg,ppp,utun,ipsec,cscotun,gpd,fortissl,zt,nordlynx,tailscale)', list)
    .option('--vpn-check-seconds <n>', 'how often a task deferred by a VPN looks again', positiveInteger)
    .option('--reboot-command <command>', 'command that reboots this device; it gets MESHDEPLOY_REBOOT_DELAY_SECONDS, MESHDEPLOY_REBOOT_MESSAGE, MESHDEPLOY_REBOOT_FORCE_CLOSE_APPS (default: shutdown -r)', splitRunArgs)
    .option('--retry-soon-seconds <n>', 'wait after an installer asks to retry soon (exit 1618)', positiveInteger)
    .option('--run-installers-as <user>', 'start installers, detection and reboot commands as this user (root, or UID[:GID]): for an agent that runs as its own user with CAP_SETUID and CAP_SETGID, as the agent packages\' unit does', parseRunAs)
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addHelpText('after', '\nExample:\n  meshdeploy agent start --data /var/lib/meshdeploy --coordinator https://deploy.example.org:8650 --enroll-token mde_… --site berlin --ca /etc/meshdeploy/ca.pem\n  meshdeploy agent start --data /var/lib/meshdeploy --site-cache --upload-kbps 20480 --cache-max-mb 51200\n  meshdeploy agent start --config /etc/meshdeploy/agent.yaml')
    .action(async (commandOptions, command: Command) => {
      let options: Record<string, any> = commandOptions
      if (commandOptions.config !== undefined) {
        try {
          options = withConfigFile(commandOptions, command, optionValuesOf(await readAgentConfig(commandOptions.config)))
        } catch (error) {
          process.stderr.write(`meshdeploy agent: ${(error as Error).message}\n`)
          process.exitCode = 2
          return
        }
      }
      if (options.data === undefined) {
        process.stderr.write('meshdeploy agent: a data folder is needed (--data, or data: in the config file)\n')
        process.exitCode = 2
        return
      }
      if (options.runInstallersAs !== undefined) {
        const { runChildProcessesAs } = await import('./install/process.js')
        runChildProcessesAs(options.runInstallersAs)
      }
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
      let swarmKey: Uint8Array | undefined
      try {
        tls = await trustFrom(options)
        if (options.swarmKey !== undefined && options.p2p !== false) {
          const { readSwarmKeyFile } = await import('./p2p/private-network.js')
          swarmKey = await readSwarmKeyFile(options.swarmKey)
        }
      } catch (error) {
        process.stderr.write(`meshdeploy agent: ${(error as Error).message}\n`)
        process.exitCode = 2
        return
      }
      await runAgent({
        ...overrides,
        dataDir: options.data,
        ...(tls !== undefined ? { tls } : {}),
        ...(options.insecureHttp === true ? { allowInsecureHttp: true } : {}),
        ...(options.clockSkewSeconds !== undefined ? { clockSkewMs: options.clockSkewSeconds * 1000 } : {}),
        ...(options.timeZone !== undefined ? { timeZone: options.timeZone } : {}),
        coordinatorUrl,
        installRoot: options.installRoot,
        logLevel: options.logLevel,
        ...(options.enrollToken !== undefined ? { enrollToken: options.enrollToken } : {}),
        ...(options.site !== undefined ? { site: options.site } : {}),
        ...(options.groups !== undefined ? { groups: options.groups } : {}),
        ...(options.hostname !== undefined ? { hostname: options.hostname } : {}),
        ...(options.packageRoot !== undefined ? { packageRoot: options.packageRoot } : {}),
        ...(options.downloadConcurrency !== undefined ? { downloadConcurrency: options.downloadConcurrency } : {}),
        ...(options.vpnInterfaces !== undefined ? { vpnInterfacePrefixes: options.vpnInterfaces } : {}),
        ...(options.vpnCheckSeconds !== undefined ? { vpnCheckIntervalMs: options.vpnCheckSeconds * 1000 } : {}),
        ...(options.rebootCommand !== undefined ? { rebootCommand: options.rebootCommand } : {}),
        ...(options.retrySoonSeconds !== undefined ? { retrySoonMs: options.retrySoonSeconds * 1000 } : {}),
        ...(options.cacheMaxMb !== undefined ? { cacheMaxBytes: options.cacheMaxMb * 1024 * 1024 } : {}),
        ...(options.siteCache === true ? { siteCache: true } : {}),
        ...(options.metricsListen !== undefined ? { metricsListen: options.metricsListen } : {}),
        mesh: options.p2p === false
          ? false
          : {
              ...(overrides.mesh !== false ? overrides.mesh : {}),
              mdns: options.mdns,
              usePeerList: options.peerList,
              statusGossip: options.statusGossip,
              ...(options.listen !== undefined ? { listen: options.listen } : {}),
              ...(options.announce !== undefined ? { announce: options.announce } : {}),
              ...(options.uploadKbps !== undefined ? { uploadBytesPerSecond: options.uploadKbps * BYTES_PER_KB } : {}),
              ...(options.maxPeers !== undefined ? { peerSet: { maxPeers: options.maxPeers } } : {}),
              ...(swarmKey !== undefined ? { swarmKey } : {})
            }
      })
    })

  agent.command('swarm-key')
    .description('make a private-network key (pre-shared key) for the agents of an organisation')
    .requiredOption('--out <file>', 'where to write it (never over an existing file; mode 0600)')
    .addHelpText('after', '\nCopy the file to every device and start the agents with --swarm-key FILE. Every agent of a\nsite must hold the same key: agents with another key, or none, cannot connect to them.\n\nExample:\n  meshdeploy agent swarm-key --out /etc/meshdeploy/swarm.key')
    .action(async options => {
      const { writeNewSwarmKeyFile } = await import('./p2p/private-network.js')
      try {
        const keyId = await writeNewSwarmKeyFile(options.out)
        process.stdout.write(`wrote a new swarm key to ${options.out as string} (fingerprint ${keyId}); agents log this fingerprint when they start with it\n`)
      } catch (error) {
        process.stderr.write(`meshdeploy agent swarm-key: ${(error as Error).message}\n`)
        process.exitCode = 1
      }
    })

  agent.command('request <package>')
    .description('ask for a self-service package (name, id or id prefix) to be installed on this device')
    .requiredOption('--data <dir>', 'the agent\'s data folder')
    .option('--insecure-http', 'the coordinator is on plain http:// (a lab or loopback only)')
    .option('--user <id>', 'the person asking, as the directory knows them')
    .option('--reason <text>', 'why, for the approver')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nThe request waits for an operator (meshdeploy request approve ID) unless requests are auto-approved;\nthe approval creates an install task for this device.\n\nExample:\n  meshdeploy agent request "7-Zip" --data /var/lib/meshdeploy --user alice --reason "need to open archives"')
    .action(async (reference: string, options) => {
      await withDevice(options, async client => {
        const request = await client.requestPackage({ package: reference, ...(options.user !== undefined ? { user: options.user } : {}), ...(options.reason !== undefined ? { reason: options.reason } : {}) })
        if (options.json === true) {
          process.stdout.write(JSON.stringify(request, null, 2) + '\n')
          return
        }
        const what = `${request.packageName} ${request.packageVersion}`
        process.stdout.write(request.status === 'approved'
          ? `request ${request.id} for ${what} was approved; task ${request.taskId ?? '-'} installs it\n`
          : `request ${request.id} for ${what} is ${request.status}; an operator decides (meshdeploy request approve ${request.id})\n`)
      })
    })

  agent.command('catalog')
    .description('list the self-service packages this device may request')
    .requiredOption('--data <dir>', 'the agent\'s data folder')
    .option('--insecure-http', 'the coordinator is on plain http:// (a lab or loopback only)')
    .option('--json', 'print JSON')
    .action(async options => {
      await withDevice(options, async client => {
        const packages = await client.catalog()
        if (options.json === true) {
          process.stdout.write(JSON.stringify(packages, null, 2) + '\n')
          return
        }
        for (const pkg of packages) process.stdout.write(`${pkg.id.slice(0, 12)}  ${pkg.name} ${pkg.version}${pkg.publisher !== undefined ? ` (${pkg.publisher})` : ''}${pkg.description !== undefined ? ` — ${pkg.description}` : ''}\n`)
        if (packages.length === 0) process.stdout.write('no self-service packages for this device\n')
      })
    })

  agent.command('requests')
    .description('list this device\'s requests and their decisions')
    .requiredOption('--data <dir>', 'the agent\'s data folder')
    .option('--insecure-http', 'the coordinator is on plain http:// (a lab or loopback only)')
    .option('--json', 'print JSON')
    .action(async options => {
      await withDevice(options, async client => {
        const requests = await client.requests()
        if (options.json === true) {
          process.stdout.write(JSON.stringify(requests, null, 2) + '\n')
          return
        }
        for (const request of requests) process.stdout.write(`${request.id}  ${request.packageName} ${request.packageVersion}  ${request.status}${request.taskId !== undefined ? `  task ${request.taskId}` : ''}${request.comment !== undefined ? `  "${request.comment}"` : ''}\n`)
        if (requests.length === 0) process.stdout.write('no requests\n')
      })
    })
  withTrustOptions(agent.command('install-service'))
    .description('enroll (when given a token) and install the agent as a systemd service, enabled and started')
    .requiredOption('--data <dir>', 'data folder of the agent')
    .option('--coordinator <url>', 'coordinator URL, for enrollment', process.env.MESHDEPLOY_URL)
    .option('--enroll-token <token>', 'enroll now, so the unit holds no secret', process.env.MESHDEPLOY_ENROLL_TOKEN)
    .option('--site <name>', 'site this device belongs to')
    .option('--groups <a,b>', 'static groups, comma separated', list)
    .option('--install-root <dir>', 'folder that absolute install paths are resolved under')
    .option('--package-root <dir>', 'root dpkg and rpm install under')
    .option('--vpn-interfaces <prefixes>', 'name prefixes of VPN interfaces, comma separated')
    .option('--reboot-command <command>', 'command that reboots this device')
    .option('--swarm-key <file>', 'private network key file the agent is started with')
    .option('--name <name>', 'unit name', 'meshdeploy-agent')
    .option('--unit-dir <dir>', 'where unit files go', '/etc/systemd/system')
    .option('--no-enable', 'write the unit but do not enable or start it')
    .addHelpText('after', '\nExample:\n  meshdeploy agent install-service --data /var/lib/meshdeploy-agent --coordinator https://deploy.example.org:8650 --ca /etc/meshdeploy/ca.pem --enroll-token mde_… --site berlin')
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
          const tls = await trustFrom(options)
          const client = new CoordinatorClient({ url: options.coordinator, ...(tls !== undefined ? { tls } : {}), allowInsecureHttp: options.insecureHttp === true })
          const { identity, enrolled } = await loadOrEnroll({
            dataDir, client, enrollToken: options.enrollToken, agentVersion: AGENT_VERSION,
            ...(tls !== undefined ? { tls } : {}),
            ...(options.site !== undefined ? { site: options.site } : {}),
            ...(options.groups !== undefined ? { groups: options.groups } : {})
          })
          client.close()
          process.stdout.write(`${enrolled ? 'enrolled' : 'already enrolled'} as ${identity.deviceId} (site ${identity.site})\n`)
        }
        const bin = resolve(fileURLToPath(import.meta.url), '../../../bin/meshdeploy.js')
        const command = [process.execPath, bin, 'agent', 'start', '--data', dataDir]
        if (options.installRoot !== undefined) command.push('--install-root', resolve(options.installRoot))
        if (options.insecureHttp === true) command.push('--insecure-http')
        if (options.packageRoot !== undefined) command.push('--package-root', resolve(options.packageRoot))
        if (options.vpnInterfaces !== undefined) command.push('--vpn-interfaces', options.vpnInterfaces)
        if (options.rebootCommand !== undefined) command.push('--reboot-command', options.rebootCommand)
        if (options.swarmKey !== undefined) {
          const { readSwarmKeyFile } = await import('./p2p/private-network.js')
          await readSwarmKeyFile(options.swarmKey)
          command.push('--swarm-key', resolve(options.swarmKey))
        }
        await installService({ name: options.name, unitDir: options.unitDir, command, enable: options.enable !== false, log: line => { process.stdout.write(line + '\n') } })
      } catch (error) {
        process.stderr.write(`meshdeploy agent install-service: ${(error as Error).message}\n`)
        process.exitCode = 1
      }
    })
  return agent
}
