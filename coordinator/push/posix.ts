import { stringify } from 'yaml'
import type { DetectionRule, PackageKind } from '../../protocol/index.js'
import type { AgentPackageFormat } from './agent-packages.js'

/**
 * The steps of a push install on a Linux host, as POSIX shell text: what
 * the coordinator runs over its transport. Pure: nothing here connects.
 */

/** Package kinds a push installs without an agent. */
export const PUSHABLE_KINDS: ReadonlySet<PackageKind> = new Set<PackageKind>(['deb', 'rpm', 'shell'])

/** Quotes a word for a POSIX shell. */
export function shellQuote (word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word
  return `'${word.replace(/'/g, `'\\''`)}'`
}

/** Marks the os-release part of the probe's answer. */
const OS_RELEASE_MARK = '--- os-release'

/** What the host says it is: kernel, machine, the login's uid, tools on PATH, then os-release. */
export const PROBE_COMMAND = [
  'printf "kernel=%s\\n" "$(uname -s)"',
  'printf "machine=%s\\n" "$(uname -m)"',
  'printf "uid=%s\\n" "$(id -u)"',
  'for tool in dpkg dpkg-deb rpm rpm2cpio cpio systemctl sudo timeout sha256sum mktemp setsid shutdown; do command -v "$tool" >/dev/null 2>&1 && printf "tool=%s\\n" "$tool"; done',
  `echo '${OS_RELEASE_MARK}'`,
  'cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null || true'
].join('; ')

export interface HostFacts {
  kernel: string
  machine: string
  uid: number
  tools: Set<string>
  /** os-release: ID, ID_LIKE, VERSION_ID, PRETTY_NAME, … */
  os: Record<string, string>
}

/** Reads os-release: KEY=value, the value possibly quoted. */
export function parseOsRelease (text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim())
    if (match === null) continue
    let value = match[2].trim()
    if (/^".*"$/.test(value)) value = value.slice(1, -1).replace(/\\(["$`\\])/g, '$1')
    else if (/^'.*'$/.test(value)) value = value.slice(1, -1)
    out[match[1]] = value
  }
  return out
}

export function parseProbe (stdout: string): HostFacts {
  const [head, osText = ''] = stdout.split(`${OS_RELEASE_MARK}\n`)
  const facts: HostFacts = { kernel: '', machine: '', uid: -1, tools: new Set(), os: parseOsRelease(osText) }
  for (const line of head.split('\n')) {
    const [key, ...rest] = line.split('=')
    const value = rest.join('=').trim()
    if (key === 'kernel') facts.kernel = value
    else if (key === 'machine') facts.machine = value
    else if (key === 'uid') facts.uid = /^\d+$/.test(value) ? Number(value) : -1
    else if (key === 'tool') facts.tools.add(value)
  }
  return facts
}

/** How a host calls itself in results: `Debian GNU/Linux 12 (bookworm), x86_64`. */
export function describeHost (facts: HostFacts): string {
  const name = facts.os.PRETTY_NAME ?? [facts.os.NAME, facts.os.VERSION_ID].filter(part => part !== undefined).join(' ')
  return [name !== '' ? name : facts.kernel, facts.machine].filter(part => part !== '').join(', ')
}

/**
 * The agent package for a host: .deb where os-release says Debian (or a
 * derivative) and dpkg is there, .rpm for the Red Hat, Fedora and SUSE
 * families with rpm, else whichever of the two the host has.
 */
export function agentPackageFormatFor (facts: HostFacts): AgentPackageFormat | undefined {
  const family = `${facts.os.ID ?? ''} ${facts.os.ID_LIKE ?? ''}`.toLowerCase().split(/\s+/)
  const hasDpkg = facts.tools.has('dpkg')
  const hasRpm = facts.tools.has('rpm')
  if (family.some(id => ['debian', 'ubuntu'].includes(id)) && hasDpkg) return 'deb'
  if (family.some(id => ['rhel', 'fedora', 'centos', 'suse', 'opensuse', 'sles', 'amzn', 'rocky', 'almalinux', 'ol'].includes(id)) && hasRpm) return 'rpm'
  if (hasDpkg) return 'deb'
  if (hasRpm) return 'rpm'
  return undefined
}

/** How a login gets the rights to install: it is root, passwordless sudo, or sudo with its password on standard input. */
export type Elevation = 'root' | 'sudo' | 'sudo-password'

/** Asks sudo whether the login may run commands as root (`-S`: the password comes on standard input, never on a command line). */
export function sudoCheckCommand (withPassword: boolean): string {
  return withPassword ? "sudo -S -p '' -- true" : 'sudo -n -- true'
}

/**
 * The command line that runs a script as root. With a password, sudo reads
 * its first line from standard input; the script itself then reads nothing
 * more from it.
 */
export function asRoot (script: string, elevation: Elevation): string {
  switch (elevation) {
    case 'root': return `sh -c ${shellQuote(script)}`
    case 'sudo': return `sudo -n -- sh -c ${shellQuote(script)}`
    case 'sudo-password': return `sudo -S -p '' -- sh -c ${shellQuote(`exec </dev/null; ${script}`)}`
  }
}

/** Bounds a command on the host itself (coreutils timeout), so that an installer that hangs does not outlive the attempt. */
export function withTimeout (command: string, seconds: number, facts: HostFacts): string {
  return facts.tools.has('timeout') ? `timeout --kill-after=10 ${seconds} ${command}` : command
}

export const MAKE_WORK_FOLDER = 'umask 077; mktemp -d "${TMPDIR:-/tmp}/meshdeploy-push.XXXXXXXX"'

/** Writes standard input to a file only its owner reads. */
export function writeFileCommand (path: string): string {
  return `umask 077; cat > ${shellQuote(path)}`
}

export function sha256Command (path: string): string {
  return `sha256sum ${shellQuote(path)}`
}

/** The hash sha256sum printed, or undefined. */
export function parseSha256 (stdout: string): string | undefined {
  return /^([0-9a-f]{64})\s/.exec(stdout.trim())?.[1]
}

export function removeFolderCommand (path: string): string {
  return `rm -rf -- ${shellQuote(path)}`
}

export interface AgentConfigInit {
  coordinatorUrl: string
  enrollToken: string
  site?: string
  groups?: string[]
  pinSha256?: string
  /** Under a prefix: the data folder and install root move under it. */
  prefix?: string
}

/** The agent's config file for a pushed agent (the keys of `agent start`). */
export function renderPushedAgentConfig (init: AgentConfigInit): string {
  const data = `${init.prefix ?? ''}/var/lib/meshdeploy-agent`
  const settings: Record<string, unknown> = {
    coordinator: init.coordinatorUrl,
    enrollToken: init.enrollToken,
    ...(init.site !== undefined ? { site: init.site } : {}),
    ...(init.groups !== undefined && init.groups.length > 0 ? { groups: init.groups } : {}),
    ...(init.pinSha256 !== undefined ? { pinSha256: init.pinSha256 } : {}),
    ...(init.coordinatorUrl.startsWith('http:') ? { insecureHttp: true } : {}),
    data,
    ...(init.prefix !== undefined ? { installRoot: init.prefix } : {}),
    logLevel: 'info'
  }
  return `# Written by a meshdeploy push install. The enrollment token is for this device's first start only.\n${stringify(settings)}`
}

/** What the install script prints when the host already had an enrolled agent (an upgrade). */
export const ALREADY_ENROLLED_MARK = 'meshdeploy-push: already enrolled as'

export interface AgentInstallInit {
  format: AgentPackageFormat
  /** The uploaded package and config, in the work folder. */
  packageFile: string
  configFile: string
  /** Unpack under this folder and start the agent there without a service manager. */
  prefix?: string
  /** Bound on the package manager, in seconds, enforced on the host (coreutils timeout) when it has it. */
  timeoutSeconds?: number
}

/** Prints the device id of an agent already enrolled here (never its credential). */
function enrolledIdentity (dataDir: string): string {
  const identity = `${dataDir}/agent.json`
  return `if [ -s ${shellQuote(identity)} ]; then printf '%s %s\\n' '${ALREADY_ENROLLED_MARK}' "$(sed -n 's/.*"deviceId"[[:space:]]*:[[:space:]]*"\\([A-Za-z0-9_-]*\\)".*/\\1/p' ${shellQuote(identity)} | head -n 1)"; fi`
}

/**
 * The script (run as root) that installs the agent. The config goes in
 * first, so that the package's postinst finds a coordinator and starts the
 * agent, which enrolls; a host whose agent is enrolled already keeps its
 * config and identity and only gets the new package (an upgrade).
 * Under a prefix the package is unpacked there (dpkg-deb -x, or rpm2cpio)
 * and the agent started detached, its pid in <prefix>/run.
 */
export function agentInstallScript (init: AgentInstallInit): string {
  const root = init.prefix ?? ''
  const config = `${root}/etc/meshdeploy/agent.yaml`
  const data = `${root}/var/lib/meshdeploy-agent`
  const keepOrWriteConfig = [
    enrolledIdentity(data),
    `if [ -s ${shellQuote(`${data}/agent.json`)} ] && [ -f ${shellQuote(config)} ]; then :; else install -d -m 0755 ${shellQuote(`${root}/etc/meshdeploy`)} && install -m 0600 ${shellQuote(init.configFile)} ${shellQuote(config)}; fi`
  ]
  if (init.prefix === undefined) {
    const limit = init.timeoutSeconds !== undefined ? `timeout --kill-after=10 ${init.timeoutSeconds} ` : ''
    const install = init.format === 'deb'
      ? `DEBIAN_FRONTEND=noninteractive ${limit}dpkg --force-confold --install ${shellQuote(init.packageFile)}`
      : `${limit}rpm --upgrade --replacepkgs ${shellQuote(init.packageFile)}`
    return ['set -e', ...keepOrWriteConfig, install].join('\n')
  }
  const prefix = shellQuote(init.prefix)
  const pidFile = shellQuote(`${init.prefix}/run/meshdeploy-agent.pid`)
  const unpack = init.format === 'deb'
    ? `dpkg-deb -x ${shellQuote(init.packageFile)} ${prefix}`
    : `(cd ${prefix} && rpm2cpio ${shellQuote(init.packageFile)} | cpio -idm --quiet)`
  return [
    'set -e',
    `install -d -m 0755 ${prefix} ${shellQuote(`${init.prefix}/run`)} ${shellQuote(`${init.prefix}/var/log`)}`,
    `install -d -m 0700 ${shellQuote(data)}`,
    // An agent started here by an earlier push stops before its files are replaced.
    `if [ -s ${pidFile} ]; then old=$(cat ${pidFile}); if kill "$old" 2>/dev/null; then i=0; while kill -0 "$old" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.2; i=$((i + 1)); done; fi; rm -f ${pidFile}; fi`,
    ...keepOrWriteConfig,
    unpack,
    `setsid ${shellQuote(`${init.prefix}/opt/meshdeploy-agent/bin/meshdeploy-agent`)} start --config ${shellQuote(config)} </dev/null >>${shellQuote(`${init.prefix}/var/log/meshdeploy-agent.log`)} 2>&1 &`,
    `echo $! > ${pidFile}`
  ].join('\n')
}

/** The last lines the agent logged, for a result that says why it did not enroll. */
export function agentLogCommand (prefix?: string): string {
  return prefix !== undefined
    ? `tail -n 20 ${shellQuote(`${prefix}/var/log/meshdeploy-agent.log`)} 2>&1`
    : 'journalctl -u meshdeploy-agent -n 20 --no-pager 2>&1 || systemctl status meshdeploy-agent --no-pager 2>&1'
}

/** Installs a package of a pushable kind from the work folder, with the task's silent-install arguments. */
export function packageInstallCommand (kind: PackageKind, file: string, runArgs: readonly string[]): string {
  const args = runArgs.map(shellQuote)
  switch (kind) {
    case 'deb': return ['env', 'DEBIAN_FRONTEND=noninteractive', 'dpkg', ...args, '--install', shellQuote(file)].join(' ')
    case 'rpm': return ['rpm', '--upgrade', ...args, shellQuote(file)].join(' ')
    case 'shell': return ['/bin/sh', shellQuote(file), ...args].join(' ')
    default: throw new TypeError(`a ${kind} package is not installed by a push`)
  }
}

/** Reboots with shutdown(8)'s warning to logged-in users; shutdown counts in whole minutes. */
export function rebootCommand (delaySeconds: number, message: string): string {
  const when = delaySeconds <= 0 ? 'now' : `+${Math.ceil(delaySeconds / 60)}`
  return `shutdown -r ${when} ${shellQuote(message.slice(0, 200))}`
}

export interface DetectionOutcome {
  installed: boolean
  /** The rule could not be checked on this host. */
  unknown?: boolean
  detail: string
}

/** The command that checks a detection rule on a Linux host; undefined for rules of other platforms. */
export function detectionCommand (rule: DetectionRule): string | undefined {
  switch (rule.type) {
    case 'file': return `if [ -f ${shellQuote(rule.path)} ]; then sha256sum ${shellQuote(rule.path)}; else echo missing; fi`
    case 'command': return rule.command.map(shellQuote).join(' ')
    case 'linux-package': return rule.manager === 'dpkg'
      ? `dpkg-query --show --showformat='\${db:Status-Status}\\t\${Version}\\n' ${shellQuote(rule.name)} 2>/dev/null`
      : `rpm --query --queryformat '%{VERSION}-%{RELEASE}\\n' ${shellQuote(rule.name)} 2>/dev/null`
    default: return undefined
  }
}

/** Reads the answer of detectionCommand. */
export function parseDetection (rule: DetectionRule, exitCode: number | null, stdout: string): DetectionOutcome {
  const line = stdout.trim().split('\n')[0] ?? ''
  switch (rule.type) {
    case 'file': {
      if (line === 'missing' || exitCode !== 0) return { installed: false, detail: `${rule.path} does not exist` }
      const sha256 = parseSha256(line)
      if (rule.sha256 === undefined || sha256 === rule.sha256) return { installed: true, detail: `${rule.path} exists${rule.sha256 !== undefined ? ' with the expected SHA-256' : ''}` }
      return { installed: false, detail: `${rule.path} exists but its SHA-256 is ${sha256 ?? 'unknown'}, not ${rule.sha256}` }
    }
    case 'command':
      return { installed: exitCode === 0, detail: `${rule.command[0]} exited ${exitCode ?? 'without a status'}` }
    case 'linux-package': {
      const [status, version] = line.split('\t')
      const installed = exitCode === 0 && (rule.manager === 'rpm' ? line !== '' && !/not installed/.test(line) : status === 'installed')
      const found = rule.manager === 'rpm' ? line : version
      if (!installed) return { installed: false, detail: `${rule.name} is not installed (${rule.manager})` }
      if (rule.version !== undefined && found !== rule.version) return { installed: false, detail: `${rule.name} is at ${found ?? 'an unknown version'}, not ${rule.version}` }
      return { installed: true, detail: `${rule.name} ${found ?? ''} is installed (${rule.manager})`.replace('  ', ' ') }
    }
    default:
      return { installed: false, unknown: true, detail: `a ${rule.type} rule cannot be checked on a Linux host` }
  }
}
