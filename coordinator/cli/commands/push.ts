import { Command, Option } from 'commander'
import { readFile } from 'node:fs/promises'
import type { ApiClient } from '../api-client.js'
import { clientFrom, EXIT, list, positiveInteger, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { table } from '../format.js'
import { allPushHosts, followPush, renderPushProgress, renderPushResults } from '../push-view.js'
import { splitRunArgs } from '../../../protocol/index.js'

function nonNegativeInteger (value: string): number {
  const number = Number(value)
  if (!Number.isInteger(number) || number < 0) throw new UsageError(`${value} is not a whole number`)
  return number
}

function collect (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/** Hosts from --hosts and --hosts-file (one per line; # starts a comment). */
async function hostsOf (options: { hosts?: string[], hostsFile?: string }): Promise<string[]> {
  const hosts = [...(options.hosts ?? [])]
  if (options.hostsFile !== undefined) {
    let text: string
    try {
      text = await readFile(options.hostsFile, 'utf8')
    } catch (error) {
      throw new UsageError(`cannot read ${options.hostsFile}: ${(error as Error).message}`)
    }
    hosts.push(...text.split('\n').map(line => line.replace(/#.*$/, '').trim()).filter(line => line !== ''))
  }
  if (hosts.length === 0) throw new UsageError('give the hosts with --hosts H1,H2 or --hosts-file FILE')
  return hosts
}

/** Credential ids for names or ids, in the order given. */
async function credentialIds (client: ApiClient, references: string[]): Promise<string[]> {
  const known: Array<{ id: string, name: string }> = []
  let cursor: string | undefined
  do {
    const page = await client.get(`/v1/credentials?limit=1000${cursor !== undefined ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
    known.push(...page.credentials)
    cursor = page.nextCursor
  } while (cursor !== undefined)
  return references.map(reference => {
    const found = known.find(credential => credential.id === reference) ?? known.find(credential => credential.name === reference)
    if (found === undefined) throw new UsageError(`no credential named or numbered ${reference} (meshdeploy credential list)`)
    return found.id
  })
}

function hostKeys (pairs: string[] | undefined): Record<string, string> | undefined {
  if (pairs === undefined) return undefined
  const out: Record<string, string> = {}
  for (const pair of pairs) {
    const at = pair.lastIndexOf('=')
    if (at <= 0) throw new UsageError(`${pair} is not HOST=SHA256:FINGERPRINT`)
    out[pair.slice(0, at)] = pair.slice(at + 1)
  }
  return out
}

/** Waits for the run, prints its results; the exit code says whether every host succeeded. */
async function report (client: ApiClient, id: string, json: boolean): Promise<number> {
  const ended = await followPush(client, id)
  const hosts = await allPushHosts(client, id, ended.run)
  if (json) printJson({ ...ended, hosts })
  else print(renderPushResults(hosts))
  return hosts.every(host => host.state === 'succeeded') ? EXIT.ok : EXIT.taskFailed
}

export function pushCommand (): Command {
  const push = withApiOptions(new Command('push').enablePositionalOptions())
    .description('install the agent, or a deb, rpm or shell package, over SSH on hosts that have no agent yet')
    .option('--hosts <list>', 'host names or addresses, comma separated, each optionally :port', list)
    .option('--hosts-file <file>', 'or read them from a file, one per line')
    .option('--credentials <list>', 'credential names or ids, comma separated: tried in this order on each host (meshdeploy credential add)', list)
    .option('--package <id>', 'install this package instead of the agent')
    .option('--run-args <args>', 'silent-install arguments for the package\'s installer, as a shell would split them')
    .option('--site <name>', 'the site pushed agents enroll into')
    .option('--groups <list>', 'groups pushed agents enroll with, comma separated', list)
    .option('--coordinator-url <url>', 'the URL pushed agents reach this coordinator by (default: its public URL)')
    .option('--install-prefix <dir>', 'unpack the agent under this folder and start it there without a service manager, instead of installing the system package')
    .option('--enroll-timeout-seconds <n>', 'how long to wait for a pushed agent to enroll (default 120)', positiveInteger)
    .option('--max-attempts <n>', 'attempts per host, each trying the credentials in order (default 3)', positiveInteger)
    .option('--retry-delay-seconds <n>', 'wait between attempts on a host (default 60)', nonNegativeInteger)
    .addOption(new Option('--reboot <policy>', 'never, or always after a successful install (asking the user needs an agent: use a task)').choices(['never', 'always']).default('never'))
    .option('--reboot-delay-seconds <n>', 'with --reboot always: warning time for logged-in users, rounded up to minutes (default 60)', nonNegativeInteger)
    .option('--port <n>', 'SSH port of hosts that name none (default 22)', positiveInteger)
    .option('--host-key <host=fingerprint>', 'the SHA-256 fingerprint a host\'s key must have (ssh-keygen -lf); repeat for each host. Without it a host\'s key is pinned at first contact', collect)
    .option('--concurrency <n>', 'hosts worked on at once (default 8, at most 32)', positiveInteger)
    .option('--connect-timeout-seconds <n>', 'bound on connecting and logging in (default 20)', positiveInteger)
    .option('--command-timeout-seconds <n>', 'bound on each command, the installer included (default 900)', positiveInteger)
    .option('--name <name>', 'name of the push install (default: Installation of …)')
    .option('--save', 'save it without starting (start it later: meshdeploy push rerun ID --all)')
    .option('--no-wait', 'queue it and return; follow it with meshdeploy push show ID')
    .addHelpText('after', `
Each host gets at most --max-attempts attempts; each attempt tries the credentials in order until one logs in
and may install (root, or sudo: an account's password is given to sudo on standard input). A host key that
differs from the one pinned is refused before any credential is sent. Results name, per host, the credential
that worked, every attempt with each credential's outcome and the reason it failed, and the enrolled device.
Exit codes: 0 every host succeeded, 1 some did not.

Examples:
  meshdeploy push --hosts 10.1.0.21,10.1.0.22,build-7:2222 --credentials deploy-key,branch-admin --site berlin
  meshdeploy push --hosts-file ./berlin-hosts.txt --credentials deploy-key --package 3f9a0c1b --max-attempts 2 --reboot always
  meshdeploy push --hosts 10.1.0.23 --credentials deploy-key --host-key 10.1.0.23=SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8`)
    .action(async options => {
      await run(async () => {
        const hosts = await hostsOf(options)
        if (options.credentials === undefined || options.credentials.length === 0) throw new UsageError('give the credentials to try with --credentials C1,C2')
        const agentOnly = ['site', 'groups', 'coordinatorUrl', 'installPrefix', 'enrollTimeoutSeconds'].filter(key => options[key] !== undefined)
        if (options.package !== undefined && agentOnly.length > 0) throw new UsageError(`--${agentOnly[0].replace(/[A-Z]/g, letter => `-${letter.toLowerCase()}`)} goes with pushing the agent, not a package`)
        if (options.runArgs !== undefined && options.package === undefined) throw new UsageError('--run-args goes with --package')
        const client = clientFrom(options)
        try {
          const body = {
            hosts,
            credentials: await credentialIds(client, options.credentials),
            install: options.package !== undefined ? { packageId: options.package, ...(options.runArgs !== undefined ? { runArgs: splitRunArgs(options.runArgs) } : {}) } : 'agent',
            ...(options.package === undefined && agentOnly.length > 0
              ? {
                  agent: {
                    ...(options.site !== undefined ? { site: options.site } : {}),
                    ...(options.groups !== undefined ? { groups: options.groups } : {}),
                    ...(options.coordinatorUrl !== undefined ? { coordinatorUrl: options.coordinatorUrl } : {}),
                    ...(options.installPrefix !== undefined ? { installPrefix: options.installPrefix } : {}),
                    ...(options.enrollTimeoutSeconds !== undefined ? { enrollTimeoutSeconds: options.enrollTimeoutSeconds } : {})
                  }
                }
              : {}),
            reboot: { policy: options.reboot, ...(options.rebootDelaySeconds !== undefined ? { delaySeconds: options.rebootDelaySeconds } : {}) },
            ...(options.maxAttempts !== undefined ? { maxAttempts: options.maxAttempts } : {}),
            ...(options.retryDelaySeconds !== undefined ? { retryDelaySeconds: options.retryDelaySeconds } : {}),
            ...(options.port !== undefined ? { port: options.port } : {}),
            ...(options.hostKey !== undefined ? { hostKeyFingerprints: hostKeys(options.hostKey) } : {}),
            ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
            ...(options.connectTimeoutSeconds !== undefined ? { connectTimeoutSeconds: options.connectTimeoutSeconds } : {}),
            ...(options.commandTimeoutSeconds !== undefined ? { commandTimeoutSeconds: options.commandTimeoutSeconds } : {}),
            ...(options.name !== undefined ? { name: options.name } : {}),
            ...(options.save === true ? { start: false } : {})
          }
          const created = await client.post('/v1/push-installs', body)
          if (options.save === true || options.wait === false) {
            if (options.json === true) return printJson(created)
            print(`${options.save === true ? 'saved' : 'queued'} ${created.name as string} (${created.id as string}) for ${hosts.length} hosts${options.save === true ? `; start it with meshdeploy push rerun ${created.id as string} --all` : `; follow it with meshdeploy push show ${created.id as string}`}`)
            return
          }
          if (options.json !== true) process.stderr.write(`${created.name as string} (${created.id as string})\n`)
          return await report(client, created.id, options.json === true)
        } finally {
          client.close()
        }
      })
    })

  withApiOptions(push.command('list'))
    .description('list push installs, newest first, with the counts of their latest run')
    .option('--limit <n>', 'at most this many', positiveInteger, 100)
    .addHelpText('after', '\nExample:\n  meshdeploy push list')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { pushInstalls } = await client.get(`/v1/push-installs?limit=${options.limit as number}`)
        client.close()
        if (options.json === true) return printJson(pushInstalls)
        print(table(['ID', 'NAME', 'STATUS', 'RUN', 'HOSTS', 'SUCCEEDED', 'FAILED', 'CREATED', 'BY'], pushInstalls.map((entry: any) => [entry.id, entry.name, entry.status, entry.run, entry.hostCount, entry.counts.succeeded, entry.counts.failed, entry.createdAt, entry.createdBy])))
      })
    })

  withApiOptions(push.command('show <id>'))
    .description('show a push install and every host\'s result: the credential that worked, each attempt and why it failed, the enrolled device')
    .option('--run <n>', 'an earlier run (default: the latest)', positiveInteger)
    .option('--follow', 'follow it until its run ends')
    .addHelpText('after', '\nExamples:\n  meshdeploy push show push-0mabc1234-0a1b2c3d\n  meshdeploy push show push-0mabc1234-0a1b2c3d --follow')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        try {
          const record = options.follow === true ? await followPush(client, id) : await client.get(`/v1/push-installs/${encodeURIComponent(id)}?limit=1${options.run !== undefined ? `&run=${options.run as number}` : ''}`)
          const hosts = await allPushHosts(client, id, options.run)
          if (options.json === true) return printJson({ ...record, hosts })
          print(`${record.name as string} (${record.id as string}): ${record.install.type === 'agent' ? 'the agent' : `package ${record.install.packageId as string}`}, credentials ${(record.credentialIds as string[]).join(', ')}, at most ${record.maxAttempts as number} attempts, reboot ${record.reboot.policy as string}`)
          if (options.follow !== true) print(renderPushProgress(record))
          print(renderPushResults(hosts))
          return hosts.every(host => host.state === 'succeeded') ? EXIT.ok : EXIT.taskFailed
        } finally {
          client.close()
        }
      })
    })

  withApiOptions(push.command('rerun <id>'))
    .description('run a saved push install again: the hosts that did not succeed last time, or all')
    .option('--all', 'every host, also those that succeeded')
    .option('--no-wait', 'queue it and return')
    .addHelpText('after', '\nExamples:\n  meshdeploy push rerun push-0mabc1234-0a1b2c3d\n  meshdeploy push rerun push-0mabc1234-0a1b2c3d --all --no-wait')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        try {
          const record = await client.post(`/v1/push-installs/${encodeURIComponent(id)}/runs`, { hosts: options.all === true ? 'all' : 'unfinished' })
          if (options.wait === false) {
            if (options.json === true) return printJson(record)
            print(`queued run ${record.run as number} of ${record.name as string} for ${record.counts.pending as number} hosts`)
            return
          }
          return await report(client, id, options.json === true)
        } finally {
          client.close()
        }
      })
    })

  withApiOptions(push.command('cancel <id>'))
    .description('cancel a queued or running push install')
    .addHelpText('after', '\nExample:\n  meshdeploy push cancel push-0mabc1234-0a1b2c3d')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const record = await client.post(`/v1/push-installs/${encodeURIComponent(id)}/cancel`)
        client.close()
        if (options.json === true) return printJson(record)
        print(`cancelling ${record.name as string} (${record.id as string})`)
      })
    })
  return push
}
