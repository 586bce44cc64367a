import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { exitOutcome, type ContentStore } from '../../protocol/index.js'
import type { TokenService } from '../auth/tokens.js'
import { NotFoundError } from '../errors.js'
import type { PackageService } from '../packages/service.js'
import type { PackageRecord, Store } from '../store/types.js'
import { archOfMachine, readAgentPackages } from './agent-packages.js'
import {
  agentInstallScript, agentLogCommand, agentPackageFormatFor, ALREADY_ENROLLED_MARK, asRoot, describeHost, detectionCommand, MAKE_WORK_FOLDER,
  packageInstallCommand, parseDetection, parseSha256, PUSHABLE_KINDS, rebootCommand, removeFolderCommand, renderPushedAgentConfig, sha256Command,
  shellQuote, withTimeout, writeFileCommand, type DetectionOutcome, type Elevation, type HostFacts
} from './posix.js'
import { PushError, type CommandResult, type RemoteSession } from './transport.js'
import type { PushHostRecord, PushInstallRecord } from './types.js'

/** A step that failed on the host, with what the command said. */
export class InstallStepError extends PushError {
  readonly exitCode?: number | null
  readonly outputTail?: string
  constructor (reason: ConstructorParameters<typeof PushError>[0], message: string, result?: { exitCode: number | null, outputTail: string }) {
    super(reason, message)
    this.name = 'InstallStepError'
    if (result !== undefined) {
      this.exitCode = result.exitCode
      this.outputTail = result.outputTail
    }
  }
}

export interface InstallContext {
  session: RemoteSession
  facts: HostFacts
  elevation: Elevation
  /** The account's password, for sudo on standard input. */
  password?: string
  push: PushInstallRecord
  host: PushHostRecord
  signal: AbortSignal
}

export interface InstallResult {
  message: string
  deviceId?: string
  rebootRequired?: boolean
  rebootScheduled?: boolean
  exitCode?: number | null
  outputTail?: string
}

/** What the coordinator tells pushed agents to reach it by. */
export interface CoordinatorEndpoint {
  url?: string
  /** The SHA-256 fingerprint of the coordinator's HTTPS certificate, pinned by the agents. */
  pinSha256?: string
}

export interface HostInstallerInit {
  store: Store
  packages: PackageService
  content: ContentStore
  tokens: TokenService
  /** Where `npm run package:agent` left the agent packages. */
  agentPackagesDir: string
  endpoint: () => CoordinatorEndpoint
  /** How often a push looks whether its agent enrolled. @default 1000 */
  enrollPollMs?: number
  now?: () => number
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>
}

/** Short commands (the work folder, hashes, detection) finish in this. */
const SHORT_COMMAND_MS = 60_000

async function abortableSleep (ms: number, signal: AbortSignal): Promise<void> {
  const { setTimeout: wait } = await import('node:timers/promises')
  await wait(ms, undefined, { signal })
}

/**
 * The install on one host once a credential has logged in with the rights
 * to do it: the agent (its package for the host's distribution, a config
 * with a one-time enrollment token, then the wait for its enrollment) or a
 * package's installer with the package's exit codes and detection rule;
 * then the reboot the push's policy asks for.
 */
export class HostInstaller {
  private readonly init: HostInstallerInit
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>
  private readonly now: () => number

  constructor (init: HostInstallerInit) {
    this.init = init
    this.sleep = init.sleep ?? abortableSleep
    this.now = init.now ?? Date.now
  }

  async install (context: InstallContext): Promise<InstallResult> {
    const result = context.push.install.type === 'agent' ? await this.installAgent(context) : await this.installPackage(context)
    if (context.push.reboot.policy === 'always') {
      const reboot = await this.asRoot(context, rebootCommand(context.push.reboot.delaySeconds ?? 60, context.push.reboot.message ?? 'meshdeploy: restarting after an installation'), SHORT_COMMAND_MS)
      if (reboot.exitCode !== 0) throw new InstallStepError('reboot-failed', `the install succeeded but shutdown -r exited with ${reboot.exitCode ?? reboot.signal ?? 'no status'}`, reboot)
      return { ...result, rebootScheduled: true, message: `${result.message}; a reboot is scheduled` }
    }
    if (result.rebootRequired === true) return { ...result, message: `${result.message}; the host needs a reboot, which this push's policy (never) leaves to the operator` }
    return result
  }

  private async exec (context: InstallContext, command: string, timeoutMs: number, stdin?: string | Readable): Promise<CommandResult> {
    return await context.session.exec(command, { timeoutMs, signal: context.signal, ...(stdin !== undefined ? { stdin } : {}) })
  }

  /** Runs a script as root: the password, when sudo needs it, is the first line of standard input. */
  private async asRoot (context: InstallContext, script: string, timeoutMs: number): Promise<CommandResult> {
    return await this.exec(context, asRoot(script, context.elevation), timeoutMs, context.elevation === 'sudo-password' ? `${context.password ?? ''}\n` : undefined)
  }

  private async workFolder (context: InstallContext): Promise<string> {
    const result = await this.exec(context, MAKE_WORK_FOLDER, SHORT_COMMAND_MS)
    const folder = result.stdout.trim()
    if (result.exitCode !== 0 || !/^\/\S*meshdeploy-push\.[A-Za-z0-9]+$/.test(folder)) throw new InstallStepError('upload-failed', 'cannot make a work folder on the host (mktemp -d)', result)
    return folder
  }

  /** Writes bytes to a file on the host and checks them there with sha256sum. */
  private async upload (context: InstallContext, source: Readable, path: string, sha256: string, what: string): Promise<void> {
    const written = await this.exec(context, writeFileCommand(path), context.push.commandTimeoutSeconds * 1000, source)
    if (written.exitCode !== 0) throw new InstallStepError('upload-failed', `cannot write ${what} to ${path}`, written)
    const hashed = await this.exec(context, sha256Command(path), SHORT_COMMAND_MS)
    const found = parseSha256(hashed.stdout)
    if (found !== sha256) throw new InstallStepError('upload-failed', `${what} arrived damaged: SHA-256 ${found ?? 'unknown'} on the host, ${sha256} sent`, hashed)
  }

  private async cleanUp (context: InstallContext, folder: string): Promise<void> {
    await this.exec(context, removeFolderCommand(folder), SHORT_COMMAND_MS).catch(() => {})
  }

  private async installAgent (context: InstallContext): Promise<InstallResult> {
    const install = context.push.install
    if (install.type !== 'agent') throw new TypeError('not an agent push')
    const { facts } = context
    if (facts.kernel !== 'Linux') throw new PushError('unsupported-platform', `the agent packages are for Linux; the host runs ${facts.kernel !== '' ? facts.kernel : 'something else'}`)
    const format = agentPackageFormatFor(facts)
    const arch = archOfMachine(facts.machine)
    if (format === undefined) throw new PushError('unsupported-platform', `${describeHost(facts)} has neither dpkg nor rpm`)
    if (arch === undefined) throw new PushError('unsupported-platform', `there is no agent package for ${facts.machine}`)
    const prefix = install.installPrefix
    const needs = prefix === undefined ? ['systemctl'] : [...(format === 'deb' ? ['dpkg-deb'] : ['rpm2cpio', 'cpio']), 'setsid']
    const lacking = [...needs, 'sha256sum', 'mktemp'].filter(tool => !facts.tools.has(tool))
    if (lacking.length > 0) throw new PushError('unsupported-platform', `${describeHost(facts)} lacks ${lacking.join(', ')}${prefix === undefined && lacking.includes('systemctl') ? ' (the agent package runs under systemd; an install prefix runs it without)' : ''}`)
    const manifest = await readAgentPackages(this.init.agentPackagesDir).catch(error => { throw new PushError('no-agent-package', `the agent packages in ${this.init.agentPackagesDir} cannot be read: ${(error as Error).message}`) })
    if (manifest === undefined) throw new PushError('no-agent-package', `there are no agent packages in ${this.init.agentPackagesDir}: build them with npm run package:agent`)
    const agentPackage = manifest.packages.find(entry => entry.format === format && entry.arch === arch)
    if (agentPackage === undefined) throw new PushError('no-agent-package', `there is no ${format} agent package for ${arch} in ${this.init.agentPackagesDir}`)
    const endpoint = this.init.endpoint()
    const coordinatorUrl = install.coordinatorUrl ?? endpoint.url
    if (coordinatorUrl === undefined) throw new PushError('internal-error', 'the coordinator does not know the URL agents reach it by; give agent.coordinatorUrl')

    const folder = await this.workFolder(context)
    let tokenId: string | undefined
    let enrolled = false
    try {
      const packageFile = `${folder}/${agentPackage.file}`
      await this.upload(context, createReadStream(join(this.init.agentPackagesDir, agentPackage.file)), packageFile, agentPackage.sha256, `the agent package ${agentPackage.file}`)
      const { token, secret } = await this.init.tokens.createEnrollmentToken({
        maxUses: 1,
        expiresInSeconds: Math.max(600, install.enrollTimeoutSeconds * 2),
        ...(install.site !== undefined ? { site: install.site } : {}),
        ...(install.groups !== undefined ? { groups: install.groups } : {})
      }, `push ${context.push.id}`)
      tokenId = token.id
      const config = renderPushedAgentConfig({
        coordinatorUrl,
        enrollToken: secret,
        ...(install.site !== undefined ? { site: install.site } : {}),
        ...(install.groups !== undefined ? { groups: install.groups } : {}),
        ...(endpoint.pinSha256 !== undefined && install.coordinatorUrl === undefined ? { pinSha256: endpoint.pinSha256 } : {}),
        ...(prefix !== undefined ? { prefix } : {})
      })
      const configFile = `${folder}/agent.yaml`
      const written = await this.exec(context, writeFileCommand(configFile), SHORT_COMMAND_MS, config)
      if (written.exitCode !== 0) throw new InstallStepError('upload-failed', 'cannot write the agent\'s config to the host', written)
      const script = agentInstallScript({
        format, packageFile, configFile,
        ...(prefix !== undefined ? { prefix } : {}),
        ...(facts.tools.has('timeout') ? { timeoutSeconds: context.push.commandTimeoutSeconds } : {})
      })
      const result = await this.asRoot(context, script, context.push.commandTimeoutSeconds * 1000 + 30_000)
      if (result.timedOut || (result.exitCode === 124 && facts.tools.has('timeout'))) throw new InstallStepError('installer-timeout', `the agent's installation did not finish within ${context.push.commandTimeoutSeconds} s`, result)
      if (result.exitCode !== 0) throw new InstallStepError('installer-failed', `the agent's installation exited with ${result.exitCode ?? result.signal ?? 'no status'}`, result)
      const already = new RegExp(`${ALREADY_ENROLLED_MARK} ([A-Za-z0-9_-]+)`).exec(result.stdout)?.[1]
      if (already !== undefined) {
        await this.init.tokens.revokeEnrollmentToken(token.id).catch(() => {})
        tokenId = undefined
        return { message: `upgraded the agent (${agentPackage.file}); it was enrolled already as ${already}`, deviceId: already, exitCode: result.exitCode }
      }
      const deviceId = await this.enrollmentOf(token.hash, install.enrollTimeoutSeconds * 1000, context.signal)
      if (deviceId === undefined) {
        const log = await this.asRoot(context, agentLogCommand(prefix), SHORT_COMMAND_MS).catch(() => undefined)
        throw new InstallStepError('not-enrolled', `the agent was installed but did not enroll within ${install.enrollTimeoutSeconds} s`, { exitCode: result.exitCode, outputTail: log?.outputTail ?? '' })
      }
      enrolled = true
      return { message: `installed the agent (${agentPackage.file}) and it enrolled as ${deviceId}`, deviceId, exitCode: result.exitCode }
    } finally {
      if (tokenId !== undefined && !enrolled) await this.init.tokens.revokeEnrollmentToken(tokenId).catch(() => {})
      await this.cleanUp(context, folder)
    }
  }

  /** Waits until the one-time token has enrolled a device; its id, or undefined at the deadline. */
  private async enrollmentOf (tokenHash: string, timeoutMs: number, signal: AbortSignal): Promise<string | undefined> {
    const deadline = this.now() + timeoutMs
    for (;;) {
      const token = await this.init.store.collections.enrollmentTokens.get(tokenHash)
      if (token?.lastDeviceId !== undefined) return token.lastDeviceId
      if (this.now() >= deadline) return undefined
      await this.sleep(this.init.enrollPollMs ?? 1000, signal)
    }
  }

  private async detect (context: InstallContext, pkg: PackageRecord): Promise<DetectionOutcome | undefined> {
    if (pkg.detection === undefined) return undefined
    const command = detectionCommand(pkg.detection)
    if (command === undefined) return parseDetection(pkg.detection, null, '')
    const result = await this.asRoot(context, command, SHORT_COMMAND_MS)
    return parseDetection(pkg.detection, result.exitCode, result.stdout)
  }

  private async installPackage (context: InstallContext): Promise<InstallResult> {
    const install = context.push.install
    if (install.type !== 'package') throw new TypeError('not a package push')
    let pkg: PackageRecord
    try {
      pkg = await this.init.packages.get(install.packageId)
    } catch (error) {
      if (error instanceof NotFoundError) throw new PushError('package-removed', `package ${install.packageId} was removed`)
      throw error
    }
    const { facts } = context
    if (!PUSHABLE_KINDS.has(pkg.kind)) throw new PushError('unsupported-platform', `a ${pkg.kind} package is not installed by a push`)
    if (facts.kernel !== 'Linux') throw new PushError('unsupported-platform', `${pkg.name} is a Linux package; the host runs ${facts.kernel}`)
    const tool = pkg.kind === 'deb' ? 'dpkg' : pkg.kind === 'rpm' ? 'rpm' : 'sha256sum'
    if (!facts.tools.has(tool) || !facts.tools.has('sha256sum')) throw new PushError('unsupported-platform', `${describeHost(facts)} has no ${tool} for a ${pkg.kind} package`)
    const before = await this.detect(context, pkg)
    if (before?.installed === true) return { message: `already installed: ${before.detail}` }

    const folder = await this.workFolder(context)
    try {
      const file = `${folder}/${pkg.fileName.replace(/[^A-Za-z0-9._+-]/g, '_')}`
      const content = this.init.content
      const chunks = async function * (): AsyncGenerator<Buffer> {
        for (const sha256 of pkg.chunks) yield await content.get(sha256, { verify: true })
      }
      await this.upload(context, Readable.from(chunks()), file, pkg.sha256, `${pkg.name} ${pkg.version}`)
      const command = `cd ${shellQuote(folder)} && ${withTimeout(packageInstallCommand(pkg.kind, file, install.runArgs), context.push.commandTimeoutSeconds, facts)}`
      const result = await this.asRoot(context, command, context.push.commandTimeoutSeconds * 1000 + 30_000)
      if (result.timedOut || (result.exitCode === 124 && facts.tools.has('timeout'))) throw new InstallStepError('installer-timeout', `the installer did not finish within ${context.push.commandTimeoutSeconds} s`, result)
      const outcome = exitOutcome(result.exitCode, pkg.exitCodes)
      if (outcome === 'failure') throw new InstallStepError('installer-failed', `the installer exited with ${result.exitCode ?? result.signal ?? 'no status'}`, result)
      if (outcome === 'retry') throw new InstallStepError('installer-failed', `the installer exited with ${result.exitCode ?? 'no status'}, which asks to try again later`, result)
      const after = await this.detect(context, pkg)
      if (after !== undefined && !after.installed && after.unknown !== true) throw new InstallStepError('detection-failed', `the installer exited with ${result.exitCode ?? 0} but the detection rule says: ${after.detail}`, result)
      return {
        message: `installed ${pkg.name} ${pkg.version} (exit ${result.exitCode ?? 0})${after !== undefined ? `; ${after.detail}` : ''}`,
        exitCode: result.exitCode,
        outputTail: result.outputTail,
        ...(outcome === 'success-reboot-required' ? { rebootRequired: true } : {})
      }
    } finally {
      await this.cleanUp(context, folder)
    }
  }
}
