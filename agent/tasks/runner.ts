import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  chunkLengthOf, describeError, needsContent, publicKeyFromHex, verifyPackageSignature, type Architecture, type DeviceTaskState, type Manifest, type Platform
} from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import type { ChunkCache } from '../cache.js'
import type { DownloadProgress, PackageFetcher } from '../download/downloader.js'
import { TokenBucket } from '../download/token-bucket.js'
import { ChunkUnavailableError, DetectionFailedError, DiskFullError, InstallFailedError } from '../errors.js'
import { ensureFreeSpace, isNoSpaceError } from '../disk-space.js'
import { detect, NO_RULE_DETAIL, type DetectionResult } from '../install/detection.js'
import { install, type InstallContext } from '../install/installer.js'
import { uninstall } from '../install/uninstall.js'
import { planReboot, requestReboot } from '../install/reboot.js'
import type { Outbox, StatusFields } from '../outbox.js'
import { applicabilityProblem, currentArch, currentPlatform } from '../platform.js'
import type { AgentStore, LocalTask } from '../state/store.js'
import { VpnDetector } from '../vpn.js'
import { assemblePackage } from './assemble.js'
import { systemBootId, type BootIdentity } from '../boot.js'

const IN_PROGRESS_STATES: ReadonlySet<DeviceTaskState> = new Set(['downloading', 'verifying', 'installing'])

/** Failures that another attempt cannot fix: the device fails for good at once. */
const FINAL_ERRORS: ReadonlySet<string> = new Set(['BadSignatureError', 'UnsupportedKindError', 'PathEscapeError', 'UnsupportedEntryError'])

/** Wait before retrying after an installer asked to (1618: another installation in progress). */
export const RETRY_SOON_MS = 5 * 60 * 1000
/** KB/s in a task's bandwidth cap are 1024 bytes per second. */
export const BYTES_PER_KB = 1024

/** Why the agent withdrew a running attempt (the reason of the `withdrawn` signal). */
export type WithdrawReason = 'cancelled' | 'expired' | 'held'

/** Where an attempt is: waiting (before its download, or deferred while a VPN is up) or busy with the package. */
export type RunnerPhase = 'waiting' | 'downloading' | 'installing'

export interface RunnerInit {
  store: AgentStore
  outbox: Outbox
  cache: ChunkCache
  /** Brings the package's chunks into the cache. */
  fetchPackage: PackageFetcher
  logger: Logger
  dataDir: string
  installRoot: string
  /** Root for dpkg and rpm: '/' for the system, or a private one (dpkg --root). @default installRoot */
  packageRoot?: string
  /** Tells whether a VPN is up, for tasks that wait while one is. @default the system's interfaces */
  vpn?: VpnDetector
  /** Command that reboots this device (Linux); @default the system's shutdown */
  rebootCommand?: readonly string[]
  /** @default RETRY_SOON_MS */
  retrySoonMs?: number
  /** Identifies this boot, to notice later that a pending reboot happened. @default systemBootId */
  bootId?: BootIdentity
  /** Least time between two progress records of a download. @default 1000 */
  progressIntervalMs?: number
  /** @default the running platform and architecture */
  platform?: Platform
  arch?: Architecture
  now?: () => number
}

/** The origin could not be reached (as opposed to answering with something wrong). */
function isUnreachable (error: unknown): boolean {
  const name = (error as { name?: string } | undefined)?.name
  return name === 'CoordinatorUnreachableError' || name === 'TimeoutError'
}

function isFinalError (error: unknown): boolean {
  return error instanceof Error && FINAL_ERRORS.has(error.name)
}

/**
 * Runs one attempt of a task on this device: applicability, the attempt
 * limit, VPN deferral, detection, download, verification (whole-file hash and
 * publisher signature), install or uninstall, detection again, the reboot
 * policy; every step becomes a signed status record. The manifest was
 * verified by the caller.
 */
export class TaskRunner {
  private readonly init: RunnerInit
  private readonly now: () => number
  private task: LocalTask
  private readonly manifest: Manifest
  /** Aborted when the task is withdrawn or the agent stops. */
  private readonly signal: AbortSignal
  private readonly withdrawn: AbortSignal
  private readonly shutdown: AbortSignal
  private readonly vpn: VpnDetector
  /** Set once the installer has started: from then on the attempt runs to its end. */
  installing = false
  phase: RunnerPhase = 'waiting'

  /**
   * @param withdrawn aborted, with a WithdrawReason, when the coordinator withdraws the task: the attempt ends as cancelled or expired, or quietly when held
   * @param shutdown aborted when the agent stops: the attempt ends without a report and resumes at the next start
   */
  constructor (init: RunnerInit, task: LocalTask, manifest: Manifest, withdrawn: AbortSignal, shutdown: AbortSignal) {
    this.init = init
    this.now = init.now ?? Date.now
    this.task = task
    this.manifest = manifest
    this.withdrawn = withdrawn
    this.shutdown = shutdown
    this.signal = AbortSignal.any([withdrawn, shutdown])
    this.vpn = init.vpn ?? new VpnDetector()
  }

  /** Whether the attempt is past waiting: downloading, verifying or installing. */
  get busy (): boolean {
    return this.phase !== 'waiting'
  }

  private async report (fields: Partial<StatusFields> & Pick<StatusFields, 'state'>, progress?: DownloadProgress): Promise<void> {
    const full: StatusFields = {
      bytesTotal: progress?.bytesTotal ?? (needsContent(this.manifest) ? this.manifest.package.sizeBytes : 0),
      bytesDone: progress?.bytesDone ?? 0,
      bytesFromPeers: this.task.bytesFromPeers,
      bytesFromOrigin: this.task.bytesFromOrigin,
      ...fields
    }
    this.task = await this.init.outbox.record(this.task, full)
  }

  private get context (): InstallContext & { packageRoot: string } {
    return {
      installRoot: this.init.installRoot,
      packageRoot: this.init.packageRoot ?? this.init.installRoot,
      workDir: join(this.init.dataDir, 'work', this.manifest.taskId),
      platform: this.init.platform ?? currentPlatform(),
      signal: this.signal
    }
  }

  /** Runs the attempt to its end and returns the task's final local state. */
  async run (): Promise<LocalTask> {
    const { manifest } = this
    const { maxAttempts } = manifest.limits
    const workDir = this.context.workDir
    // An attempt that a stop or a crash interrupted goes on under its own number; the counter is of failed runs (Kaspersky).
    const interrupted = this.task.attempt > 0 && IN_PROGRESS_STATES.has(this.task.state)
    this.task = { ...this.task, attempt: interrupted ? this.task.attempt : Math.min(this.task.failures + 1, 1000) }
    delete this.task.retryAt
    try {
      const problem = applicabilityProblem(manifest.package, this.init.platform ?? currentPlatform(), this.init.arch ?? currentArch())
      if (problem !== undefined) {
        await this.report({ state: 'not-applicable', message: problem, bytesTotal: 0 })
        return this.task
      }
      if (Date.parse(manifest.expiresAt) <= this.now()) {
        await this.report({ state: 'expired', message: `the task's validity ended at ${manifest.expiresAt}`, bytesTotal: 0 })
        return this.task
      }
      if (this.task.failures >= maxAttempts) {
        this.task = { ...this.task, attempt: this.task.failures, final: true }
        await this.report({ state: 'failed', final: true, message: `no attempts left: ${this.task.failures} failed attempt(s) of ${maxAttempts}; raise the limit or re-run the task for failed devices` })
        return this.task
      }
      await this.waitWhileVpn(0)
      const before = await this.detect()
      if (before !== undefined && manifest.action === 'install' && before.installed) {
        await this.report({ state: 'already-installed', message: before.detail, bytesTotal: 0 })
        return this.task
      }
      if (before !== undefined && manifest.action === 'uninstall' && !before.installed && before.unknown !== true) {
        await this.report({ state: 'succeeded', exitCode: 0, message: `not installed; nothing to remove (${before.detail})`, bytesTotal: 0 })
        return this.task
      }
      await rm(workDir, { recursive: true, force: true })
      await mkdir(workDir, { recursive: true, mode: 0o700 })
      let file: string | undefined
      if (needsContent(manifest)) {
        this.phase = 'downloading'
        await this.download()
        await this.report({ state: 'verifying', bytesDone: manifest.package.sizeBytes })
        file = await assemblePackage(manifest.package, this.init.cache, workDir, this.signal)
        this.verifyPublisher()
        this.phase = 'waiting'
        await this.waitWhileVpn(manifest.package.sizeBytes)
      }
      this.signal.throwIfAborted()
      this.phase = 'installing'
      this.installing = true
      const doing = manifest.action === 'uninstall' ? 'uninstalling' : manifest.action === 'distribute-files' ? 'placing files' : 'installing'
      await this.report({ state: 'installing', message: doing, bytesDone: file !== undefined ? manifest.package.sizeBytes : 0 })
      // A running installer is never killed by a withdrawal or a stop: half an install is worse than a late one.
      const { signal: _signal, ...context } = this.context
      const outcome = manifest.action === 'uninstall' ? await uninstall(manifest, file, context) : await install(manifest, file!, context)
      if (outcome.outcome === 'failure') throw new InstallFailedError(outcome.message, outcome.exitCode, outcome.outputTail)
      if (outcome.outcome === 'retry') return await this.retrySoon(outcome.exitCode, outcome.message)
      const after = await this.detect()
      if (after !== undefined && manifest.action === 'uninstall' && after.installed) throw new DetectionFailedError(`${outcome.message}, but the detection rule still holds: ${after.detail}`)
      if (after !== undefined && manifest.action !== 'uninstall' && !after.installed) throw new DetectionFailedError(`${outcome.message}, but the detection rule does not hold: ${after.detail}`)
      const detail = after?.detail ?? (manifest.action === 'distribute-files' ? undefined : NO_RULE_DETAIL)
      const message = [outcome.message, detail].filter(part => part !== undefined).join('; ')
      return await this.finish(outcome.outcome, outcome.exitCode, message)
    } catch (error) {
      if (this.shutdown.aborted) return this.task
      if (this.withdrawn.aborted && !this.installing) return await this.withdraw()
      return await this.fail(error)
    } finally {
      this.phase = 'waiting'
      await rm(workDir, { recursive: true, force: true }).catch(() => {})
    }
  }

  /** Evaluates the detection rule; undefined when the package has none (the install state cannot be determined). */
  private async detect (): Promise<DetectionResult | undefined> {
    const rule = this.manifest.install.detection
    if (rule === undefined || this.manifest.action === 'distribute-files') return undefined
    return await detect(rule, this.context)
  }

  /** The publisher signature the coordinator checked at upload, checked again against the file just assembled. */
  private verifyPublisher (): void {
    const signature = this.manifest.package.publisherSignature
    if (signature === undefined) return
    verifyPackageSignature(this.manifest.package.sha256, signature, publicKeyFromHex(signature.publicKey))
  }

  /** Waits while a VPN is connected, if the task says so; the device shows deferred-vpn meanwhile. */
  private async waitWhileVpn (bytesDone: number): Promise<void> {
    if (!this.manifest.conditions.deferWhileVpn) return
    let reported = false
    for (;;) {
      const connected = this.vpn.connected()
      if (connected.length === 0) return
      if (!reported) {
        this.init.logger.info({ taskId: this.task.taskId, interfaces: connected }, 'deferred while a VPN is connected')
        await this.report({ state: 'deferred-vpn', message: `a VPN is connected (${connected.join(', ')}); waiting for it to disconnect`, bytesDone })
        reported = true
      }
      await sleep(this.vpn.checkIntervalMs, undefined, { signal: this.signal })
    }
  }

  /** The attempt ended because the coordinator withdrew the task. */
  private async withdraw (): Promise<LocalTask> {
    const reason = this.withdrawn.reason as WithdrawReason
    if (reason === 'held') return this.task
    if (reason === 'expired') await this.report({ state: 'expired', message: `the task's validity ended at ${this.manifest.expiresAt}` })
    else await this.report({ state: 'cancelled', message: 'the task was withdrawn' })
    return this.task
  }

  /** A successful install: the reboot policy decides between succeeded and succeeded-reboot-pending. */
  private async finish (outcome: 'success' | 'success-reboot-required' | 'success-reboot-started', exitCode: number | null, message: string): Promise<LocalTask> {
    const bytesDone = needsContent(this.manifest) ? this.manifest.package.sizeBytes : 0
    const plan = planReboot(outcome, this.manifest.action === 'distribute-files' ? { policy: 'never' } : this.manifest.reboot)
    if (plan.action === 'none') {
      await this.report({ state: 'succeeded', exitCode, message, bytesDone })
      return this.task
    }
    let note = plan.reason
    if (plan.action === 'reboot') {
      const result = await requestReboot(plan, { platform: this.init.platform ?? currentPlatform(), ...(this.init.rebootCommand !== undefined ? { command: this.init.rebootCommand } : {}) })
      const at = new Date(this.now() + plan.delaySeconds * 1000).toISOString()
      note = result.ok ? `${plan.reason}; reboot at ${at}: ${JSON.stringify(plan.message)}${plan.forceCloseApps ? ', closing blocking applications' : ''}` : `${plan.reason}, but the reboot could not be requested: ${result.detail}`
      this.init.logger.info({ taskId: this.task.taskId, ok: result.ok, detail: result.detail }, 'reboot requested')
    }
    this.task = { ...this.task, bootId: await (this.init.bootId ?? systemBootId)() }
    await this.report({ state: 'succeeded-reboot-pending', exitCode, message: `${message}; ${note}`.slice(0, 3900), bytesDone })
    return this.task
  }

  /** The installer asked to try again soon (1618): not counted as a failed attempt. */
  private async retrySoon (exitCode: number | null, message: string): Promise<LocalTask> {
    const retryAt = this.now() + (this.init.retrySoonMs ?? RETRY_SOON_MS)
    await this.report({ state: 'failed', exitCode, message: `${message}: another installation is in progress; trying again at ${new Date(retryAt).toISOString()} (not counted as a failed attempt)`, retryAt, bytesDone: this.manifest.package.sizeBytes })
    this.task = { ...this.task, retryAt }
    await this.init.store.putTask(this.task)
    return this.task
  }

  /**
   * A condition of this device's, not of the package, stopped the attempt
   * (its disk is full, or it cannot reach the origin for a chunk no site peer
   * holds): a clear report, the state and the chunks kept, and another try
   * soon, not counted as a failed attempt.
   */
  private async transientFailure (error: unknown, reason: string): Promise<LocalTask> {
    const retryAt = this.now() + (this.init.retrySoonMs ?? RETRY_SOON_MS)
    this.init.logger.warn({ taskId: this.task.taskId, err: describeError(error), retryAt }, `task attempt stopped: ${reason}`)
    await this.report({ state: 'failed', message: `${reason}; trying again at ${new Date(retryAt).toISOString()} (not counted as a failed attempt)`.slice(0, 3900), retryAt })
    this.task = { ...this.task, retryAt }
    await this.init.store.putTask(this.task)
    return this.task
  }

  /** Room for the chunks still missing and for the assembled file, before a byte is written. */
  private async ensureSpace (): Promise<void> {
    const pkg = this.manifest.package
    let missingBytes = 0
    for (const [index, sha256] of pkg.chunks.entries()) if (!this.init.cache.has(sha256)) missingBytes += chunkLengthOf(pkg, index)
    await ensureFreeSpace(this.init.dataDir, missingBytes + pkg.sizeBytes)
  }

  private async download (): Promise<void> {
    const { manifest } = this
    await this.ensureSpace()
    const interval = this.init.progressIntervalMs ?? 1000
    let lastReport = 0
    let pending: Promise<void> = Promise.resolve()
    const baseFromOrigin = this.task.bytesFromOrigin
    const baseFromPeers = this.task.bytesFromPeers
    const bucket = manifest.limits.bandwidthKBps !== undefined
      ? new TokenBucket({ bytesPerSecond: manifest.limits.bandwidthKBps * BYTES_PER_KB })
      : undefined
    await this.report({ state: 'downloading' })
    let progress: DownloadProgress
    try {
      progress = await this.init.fetchPackage({
        taskId: manifest.taskId,
        pkg: manifest.package,
        ...(bucket !== undefined ? { bucket } : {}),
        signal: this.signal,
        onProgress: current => {
          this.task.bytesFromOrigin = baseFromOrigin + current.bytesFromOrigin
          this.task.bytesFromPeers = baseFromPeers + current.bytesFromPeers
          const now = this.now()
          // Pieces that land after the attempt was stopped are not reported: the agent may be closing its store.
          if (this.signal.aborted || now - lastReport < interval || current.chunksDone === current.chunksTotal) return
          lastReport = now
          pending = pending.then(async () => { await this.report({ state: 'downloading' }, current) })
        }
      })
    } catch (error) {
      // A progress report still under way ends before the attempt does (and before the agent closes its store).
      await pending.catch(() => {})
      throw error
    }
    await pending
    this.task.bytesFromOrigin = baseFromOrigin + progress.bytesFromOrigin
    this.task.bytesFromPeers = baseFromPeers + progress.bytesFromPeers
  }

  private async fail (error: unknown): Promise<LocalTask> {
    if (error instanceof DiskFullError) return await this.transientFailure(error, `${error.message}; free some space`)
    if (isNoSpaceError(error)) return await this.transientFailure(error, `the disk holding ${this.init.dataDir} is full (${describeError(error)}); free some space`)
    if (error instanceof ChunkUnavailableError && isUnreachable(error.cause)) return await this.transientFailure(error, `the origin is out of reach and no site peer holds chunk ${error.index} (${describeError(error.cause)})`)
    const failures = this.task.failures + 1
    const maxAttempts = this.manifest.limits.maxAttempts
    const final = failures >= maxAttempts || isFinalError(error)
    const exitCode = error instanceof InstallFailedError ? error.exitCode : undefined
    const retryAt = final ? undefined : this.now() + this.manifest.limits.retryDelaySeconds * 1000
    const parts = [describeError(error), `attempt ${this.task.attempt} of ${maxAttempts}`]
    if (retryAt !== undefined) parts.push(`next try at ${new Date(retryAt).toISOString()}`)
    else if (failures < maxAttempts) parts.push('not retried: another attempt cannot fix this')
    else parts.push('no attempts left')
    if (error instanceof InstallFailedError && error.outputTail !== '') parts.push(`output: ${error.outputTail.slice(-1500)}`)
    this.init.logger.warn({ taskId: this.task.taskId, err: describeError(error), attempt: this.task.attempt, final }, 'task attempt failed')
    this.task = { ...this.task, failures }
    const fields: Partial<StatusFields> & Pick<StatusFields, 'state'> = { state: 'failed', message: parts.join('; ').slice(0, 3900), final }
    if (exitCode !== undefined) fields.exitCode = exitCode
    if (retryAt !== undefined) {
      fields.retryAt = retryAt
      this.task.retryAt = retryAt
    }
    if (final) this.task.final = true
    await this.report(fields)
    return this.task
  }
}
