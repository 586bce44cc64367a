import type { ExitOutcome, Platform, RebootSpec } from '../../protocol/index.js'
import { rebootCommand, type CommandLine } from './commands.js'
import { runProcess } from './process.js'

/** prompt without a deadline: the user has this long before the reboot is forced. */
export const DEFAULT_PROMPT_DEADLINE_SECONDS = 15 * 60
export const DEFAULT_REBOOT_MESSAGE = 'Software was installed on this computer; it will restart to finish.'

export interface RebootPlan {
  /** none: no reboot is needed; pending: one is needed but not made (or the installer made it); reboot: run the reboot command. */
  action: 'none' | 'pending' | 'reboot'
  delaySeconds: number
  message: string
  forceCloseApps: boolean
  /** Why, for the status message. */
  reason: string
}

/**
 * What to do after a successful install: the installer's outcome (3010:
 * reboot required; 1641: reboot started) against the task's reboot policy.
 * Pure.
 */
export function planReboot (outcome: ExitOutcome, spec: RebootSpec | undefined): RebootPlan {
  const policy = spec?.policy ?? 'never'
  const message = spec?.message ?? DEFAULT_REBOOT_MESSAGE
  const forceCloseApps = spec?.forceCloseApps ?? false
  const base = { message, forceCloseApps, delaySeconds: 0 }
  if (outcome === 'success-reboot-started') return { ...base, action: 'pending', reason: 'the installer started a reboot' }
  if (policy === 'never') {
    return outcome === 'success-reboot-required'
      ? { ...base, action: 'pending', reason: 'the installer needs a reboot; the reboot policy is never, so the device restarts when its user or an operator restarts it' }
      : { ...base, action: 'none', reason: 'no reboot needed' }
  }
  if (policy === 'always') return { ...base, action: 'reboot', reason: 'the reboot policy is always: restarting now' }
  const delaySeconds = spec?.deadlineSeconds ?? DEFAULT_PROMPT_DEADLINE_SECONDS
  return { ...base, action: 'reboot', delaySeconds, reason: `the user was asked to restart; the restart is forced in ${delaySeconds} s` }
}

export interface RebootInit {
  platform: Platform
  /** Replaces the system's reboot command (Linux); it gets the plan in MESHDEPLOY_REBOOT_* variables. */
  command?: readonly string[]
  signal?: AbortSignal
}

/** The command a plan runs: the configured one (with the plan in its environment), or the system's shutdown. */
export function rebootLine (plan: RebootPlan, init: Pick<RebootInit, 'platform' | 'command'>): { line: CommandLine, env: NodeJS.ProcessEnv } {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    MESHDEPLOY_REBOOT_DELAY_SECONDS: String(plan.delaySeconds),
    MESHDEPLOY_REBOOT_MESSAGE: plan.message,
    MESHDEPLOY_REBOOT_FORCE_CLOSE_APPS: plan.forceCloseApps ? '1' : '0'
  }
  if (init.command !== undefined && init.command.length > 0) {
    const [command, ...args] = init.command
    return { line: { command, args }, env }
  }
  return { line: rebootCommand({ platform: init.platform, delaySeconds: plan.delaySeconds, message: plan.message, forceCloseApps: plan.forceCloseApps }), env }
}

/** Runs the reboot command of a plan; answers what happened, for the status message. */
export async function requestReboot (plan: RebootPlan, init: RebootInit): Promise<{ ok: boolean, detail: string }> {
  const { line, env } = rebootLine(plan, init)
  try {
    const result = await runProcess({ command: line.command, args: line.args, cwd: '/', env, timeoutMs: 60_000, ...(line.verbatim === true ? { verbatim: true } : {}), ...(init.signal !== undefined ? { signal: init.signal } : {}) })
    if (result.exitCode === 0) return { ok: true, detail: `${line.command} accepted the reboot` }
    return { ok: false, detail: `${line.command} exited ${result.exitCode ?? result.signal}: ${result.outputTail.trim().slice(-300)}` }
  } catch (error) {
    return { ok: false, detail: `${line.command} could not run: ${(error as Error).message}` }
  }
}
