import type { Command } from 'commander'
import { list, positiveInteger, UsageError } from './context.js'
import { parseDurationMinutes } from './window-options.js'

function collect (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/**
 * One ring as operators write it: `name=pilot,groups=pilot+it,success=95,soak=1h,halt=5`,
 * `percent=10`, `manual` (waits for task next-phase), or `rest` (the last ring: every target left).
 */
export function parsePhase (text: string): Record<string, unknown> {
  const phase: Record<string, unknown> = {}
  for (const part of text.split(',').map(item => item.trim()).filter(item => item !== '')) {
    const [key, value] = part.split('=').map(item => item.trim())
    const number = (): number => {
      const parsed = Number(value)
      if (value === undefined || !Number.isFinite(parsed)) throw new UsageError(`${part}: ${key} takes a number`)
      return parsed
    }
    switch (key) {
      case 'rest': break
      case 'manual': phase.autoPromote = false; break
      case 'name': phase.name = value; break
      case 'groups': phase.groups = (value ?? '').split('+').map(item => item.trim()).filter(item => item !== ''); break
      case 'percent': phase.percent = number(); break
      case 'success': phase.successPercent = number(); break
      case 'halt': phase.maxFailurePercent = number(); break
      case 'soak': phase.minSoakSeconds = parseDurationMinutes(value ?? '') * 60; break
      default: throw new UsageError(`${part}: a ring takes name=, groups=a+b, percent=, success=, soak=, halt=, manual or rest`)
    }
  }
  return phase
}

/** A time as operators type it: ISO 8601, or `now`. */
export function parseTime (value: string): string {
  if (value === 'now') return new Date().toISOString()
  const ms = Date.parse(value)
  if (!Number.isFinite(ms)) throw new UsageError(`${value} is not a time; use ISO 8601 such as 2026-12-01T22:00:00+01:00`)
  return new Date(ms).toISOString()
}

/** `none` removes a limit in an edit; otherwise a positive whole number. */
function limit (value: string): number | 'none' {
  return value === 'none' ? 'none' : positiveInteger(value)
}

/** Options that set a task's targets, schedule, limits and policies; shared by `task create` and `task edit`. */
export function withTaskOptions (command: Command): Command {
  return command
    .option('--devices <ids>', 'target devices by id or host name, comma separated', list)
    .option('--groups <names>', 'target groups, comma separated', list)
    .option('--sites <names>', 'target sites, comma separated', list)
    .option('--users <ids>', 'target the devices of these people, comma separated', list)
    .option('--departments <names>', 'target the devices of people in these departments (and their sub-departments)', list)
    .option('--roles <names>', 'target the devices of people with these roles', list)
    .option('--all', 'target every device')
    .option('--name <name>', 'task name')
    .option('--run-args <args>', 'silent-install arguments, e.g. "/S /quiet"')
    .option('--start-at <time>', 'release devices from this time (ISO 8601); default now', parseTime)
    .option('--valid-for-seconds <n>', 'how long the task dispatches after its start (default one week)', positiveInteger)
    .option('--valid-until <time>', 'or until when (ISO 8601)', parseTime)
    .option('--devices-per-minute <n>', 'release at most this many devices per minute (none: no limit)', limit)
    .option('--bandwidth-kbps <n>', 'per-device download cap, KB/s (none: no cap)', limit)
    .option('--defer-while-vpn', 'wait while the device has a VPN connected')
    .option('--no-defer-while-vpn', 'do not wait for VPNs')
    .option('--maintenance-windows <policy>', 'respect: install and reboot only inside the devices\' maintenance windows (default for install and uninstall); ignore: any time')
    .option('--phase <ring>', 'a ring of a phased rollout, in order (repeatable): groups=pilot+it or percent=10, with success=95 (percent succeeded to go on), soak=1h (least time in the ring), halt=5 (percent failed that halts), manual; the last is usually "rest"', collect)
    .option('--no-target-superseded', 'for a package that supersedes others: do not also target the devices that hold one of them')
    .option('--reboot <policy>', 'reboot after installing: never, always, prompt')
    .option('--reboot-message <text>', 'message the user sees (always, prompt)')
    .option('--reboot-deadline-seconds <n>', 'prompt: seconds before the reboot is forced', value => value === '0' ? 0 : positiveInteger(value))
    .option('--force-close-apps', 'close applications that block the session at the reboot')
    .option('--destination <dir>', 'distribute-files: destination folder')
    .option('--file-mode <mode>', 'distribute-files: octal mode of the files, e.g. 0644 (none: keep their own)')
    .option('--overwrite <policy>', 'distribute-files: replace, keep or fail when a file exists')
    .option('--entry <path>', 'script inside an archive to run (default install.sh)')
    .option('--timeout-seconds <n>', 'installer timeout', positiveInteger)
    .option('--max-attempts <n>', 'attempts before a device fails for good (default 3)', positiveInteger)
    .option('--retry-delay-seconds <n>', 'wait between attempts (default 86400)', value => value === '0' ? 0 : positiveInteger(value))
}

/** The targets the options name, or undefined when they name none. */
export function targetsFrom (options: Record<string, any>): Record<string, unknown> | undefined {
  const targets: Record<string, unknown> = {}
  if (options.all === true) targets.all = true
  const keys: Record<string, string> = { devices: 'deviceIds', groups: 'groups', sites: 'sites', users: 'users', departments: 'departments', roles: 'roles' }
  for (const [option, field] of Object.entries(keys)) if (options[option] !== undefined) targets[field] = options[option]
  return Object.keys(targets).length === 0 ? undefined : targets
}

/** The task settings the options set, for a create or an edit (where `none` removes a limit). */
export function taskFieldsFrom (options: Record<string, any>, forEdit: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = {}
  const targets = targetsFrom(options)
  if (targets !== undefined) body.targets = targets
  const plain: Record<string, string> = {
    name: 'name', runArgs: 'runArgs', destination: 'destination', entry: 'entry', overwrite: 'overwrite', timeoutSeconds: 'timeoutSeconds',
    maxAttempts: 'maxAttempts', retryDelaySeconds: 'retryDelaySeconds', startAt: 'startAt', validForSeconds: 'validForSeconds', validUntil: 'validUntil',
    deferWhileVpn: 'deferWhileVpn', maintenanceWindows: 'maintenanceWindows'
  }
  for (const [option, field] of Object.entries(plain)) if (options[option] !== undefined) body[field] = options[option]
  for (const [option, field] of Object.entries({ devicesPerMinute: 'devicesPerMinute', bandwidthKbps: 'bandwidthKBps', fileMode: 'fileMode' })) {
    const value = options[option]
    if (value === undefined) continue
    if (value === 'none') {
      if (!forEdit) continue
      body[field] = null
    } else {
      body[field] = value
    }
  }
  if (options.targetSuperseded === false) {
    if (forEdit) throw new UsageError('--no-target-superseded is set when the task is created')
    body.targetSuperseded = false
  }
  if (options.phase !== undefined) {
    if (forEdit) throw new UsageError('the rings of a phased rollout are set when the task is created')
    body.phases = (options.phase as string[]).map(parsePhase)
  }
  const reboot = ['rebootMessage', 'rebootDeadlineSeconds', 'forceCloseApps'].some(key => options[key] !== undefined)
  if (options.reboot !== undefined || reboot) {
    if (options.reboot === undefined) throw new UsageError('--reboot-message, --reboot-deadline-seconds and --force-close-apps go with --reboot always or prompt')
    body.reboot = {
      policy: options.reboot,
      ...(options.rebootMessage !== undefined ? { message: options.rebootMessage } : {}),
      ...(options.rebootDeadlineSeconds !== undefined ? { deadlineSeconds: options.rebootDeadlineSeconds } : {}),
      ...(options.forceCloseApps === true ? { forceCloseApps: true } : {})
    }
  }
  return body
}
