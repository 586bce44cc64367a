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
import { CachedChunksCorruptError, ChunkUnavailableError, DetectionFailedError, DiskFullError, InstallFailedError, NotApplicableError } from '../errors.js'
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
import { DependencyFailedError, SupersededRemovalError, contentOf, dependencyManifest, neededInstallMs, planRollout, removalManifest, type RolloutPlan } from './rollout-steps.js'
import { REBOOT_WINDOW_MS, type WindowWatch } from './window-gate.js'
import type { ManifestPackage } from '../../protocol/index.js'
import { systemBootId, type BootIdentity } from '../boot.js'

const IN_PROGRESS_STATES: ReadonlySet<DeviceTaskState> = new Set(['downloading', 'verifying', 'installing'])

/** Failures that another attempt cannot fix: the device fails for good at once. */
const FINAL_ERRORS: ReadonlySet<string> = new Set(['BadSignatureError', 'UnsupportedKindError', 'PathEscapeError', 'UnsupportedEntryError', 'CapturePathError', 'MalformedCaptureError'])
/** Failures that carry an installer's exit code and output. */
const INSTALLER_ERRORS: ReadonlySet<string> = new Set(['InstallFailedError', 'DependencyFailedError', 'SupersededRemovalError'])

/** Wait before retrying after an installer asked to (1618: another installation in progress). */
export const RETRY_SOON_MS = 5 * 60 * 1000
/** KB/s in a task's bandwidth cap are 1024 bytes per second. */
export const BYTES_PER_KB = 1024
/** Times an attempt fetches again the chunks that failed their hash at assembly, before the failure counts. */
export const MAX_ASSEMBLY_REFETCHES = 2

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
  /** The device's maintenance windows; tasks that respect them install and reboot only inside one. @default none: any time */
  windows?: WindowWatch
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
      bytesTotal: progress?.bytesTotal ?? (this.bytesTotal > 0 ? this.bytesTotal : needsContent(this.manifest) ? this.manifest.package.sizeBytes : 0),
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
      dataDir: this.init.dataDir,
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
      const plan = await planRollout(manifest, async rule => await detect(rule, this.context))
      const content = contentOf(plan, manifest, needsContent(manifest))
      this.bytesTotal = content.reduce((sum, pkg) => sum + pkg.sizeBytes, 0)
      let files = new Map<string, string>()
      if (content.length > 0) {
        // Content downloads at any time, so that the device is ready when its window opens.
        files = await this.fetchAndAssemble(content, workDir)
        this.phase = 'waiting'
        await this.waitWhileVpn(this.bytesTotal)
      }
      await this.waitForWindow(neededInstallMs(plan, manifest))
      this.signal.throwIfAborted()
      this.phase = 'installing'
      this.installing = true
      const doing = manifest.action === 'uninstall' ? 'uninstalling' : manifest.action === 'distribute-files' ? 'placing files' : 'installing'
      await this.report({ state: 'installing', message: doing, bytesDone: this.bytesTotal })
      // A running installer is never killed by a withdrawal or a stop: half an install is worse than a late one.
      const { signal: _signal, ...context } = this.context
      const before_ = await this.prepare(plan, files, context)
      const file = files.get(manifest.package.id)
      const outcome = manifest.action === 'uninstall' ? await uninstall(manifest, file, context) : await install(manifest, file!, context)
      if (outcome.outcome === 'failure') throw new InstallFailedError(outcome.message, outcome.exitCode, outcome.outputTail)
      if (outcome.outcome === 'retry') return await this.retrySoon(outcome.exitCode, outcome.message)
      const after = await this.detect()
      if (after !== undefined && manifest.action === 'uninstall' && after.installed) throw new DetectionFailedError(`${outcome.message}, but the detection rule still holds: ${after.detail}`)
      if (after !== undefined && manifest.action !== 'uninstall' && !after.installed) throw new DetectionFailedError(`${outcome.message}, but the detection rule does not hold: ${after.detail}`)
      const detail = after?.detail ?? (manifest.action === 'distribute-files' ? undefined : NO_RULE_DETAIL)
      const message = [before_, outcome.message, detail].filter(part => part !== undefined && part !== '').join('; ')
      const rebootNeeded = outcome.outcome === 'success' && this.dependencyNeedsReboot ? 'success-reboot-required' : outcome.outcome
      return await this.finish(rebootNeeded, outcome.exitCode, message)
    } catch (error) {
      if (this.shutdown.aborted) return this.task
      if (this.withdrawn.aborted && !this.installing) return await this.withdraw()
      return await this.fail(error)
    } finally {
      this.phase = 'waiting'
      await rm(workDir, { recursive: true, force: true }).catch(() => {})
    }
  }

  /** A dependency's installer asked for a reboot: the task's reboot policy applies as if the package's own had. */
  private dependencyNeedsReboot = false
  /** Bytes of every package this attempt needs: its own and those of missing dependencies and replaced packages. */
  private bytesTotal = 0

  /**
   * Installs the missing dependencies in order and removes replaced packages,
   * each checked by its detection rule; returns what was done, for the
   * status message. A failure throws DependencyFailedError or
   * SupersededRemovalError with the reason.
   */
  private async prepare (plan: RolloutPlan, files: ReadonlyMap<string, string>, context: Omit<InstallContext, 'signal'> & { packageRoot: string }): Promise<string> {
    const done: string[] = []
    for (const [index, dependency] of plan.missing.entries()) {
      const label = `${dependency.package.name} ${dependency.package.version}`
      await this.report({ state: 'installing', message: `installing dependency ${label} (${index + 1} of ${plan.missing.length})`, bytesDone: this.bytesTotal })
      const outcome = await install(dependencyManifest(this.manifest, dependency), files.get(dependency.package.id)!, context)
      if (outcome.outcome === 'failure' || outcome.outcome === 'retry') throw new DependencyFailedError(`the dependency ${label} failed: ${outcome.message}`, outcome.exitCode, outcome.outputTail)
      const after = await detect(dependency.install.detection!, context)
      if (!after.installed) throw new DependencyFailedError(`the dependency ${label} installed, but its detection rule does not hold: ${after.detail}`, outcome.exitCode)
      if (outcome.outcome !== 'success') this.dependencyNeedsReboot = true
      done.push(`dependency ${label} installed`)
    }
    for (const superseded of plan.replace) {
      const label = `${superseded.package.name} ${superseded.package.version}`
      await this.report({ state: 'installing', message: `removing ${label}, which this package replaces`, bytesDone: this.bytesTotal })
      const outcome = await uninstall(removalManifest(this.manifest, superseded), superseded.content !== undefined ? files.get(superseded.content.id) : undefined, context)
      if (outcome.outcome === 'failure' || outcome.outcome === 'retry') throw new SupersededRemovalError(`removing the superseded ${label} failed: ${outcome.message}`, outcome.exitCode, outcome.outputTail)
      const after = await detect(superseded.detection, context)
      if (after.installed) throw new SupersededRemovalError(`the superseded ${label} was removed, but its detection rule still holds: ${after.detail}`, outcome.exitCode)
      done.push(`replaced ${label}`)
    }
    for (const superseded of plan.upgrade) done.push(`upgrading ${superseded.package.name} ${superseded.package.version}`)
    return done.join('; ')
  }

  /**
   * Waits, when the task respects maintenance windows, for one that stays
   * open long enough for the installs; the device shows waiting-for-window
   * with the next start. Devices without windows install at any time.
   */
  private async waitForWindow (neededMs: number): Promise<void> {
    const windows = this.init.windows
    if (this.manifest.conditions.maintenanceWindows !== 'respect' || windows === undefined) return
    let reported: number | undefined | null = null
    for (;;) {
      const slot = windows.slotFor(neededMs)
      const now = this.now()
      if (slot !== undefined && slot.startMs <= now) return
      const next = slot?.startMs
      if (next !== reported) {
        const minutes = Math.ceil(neededMs / 60_000)
        const message = next !== undefined
          ? `content ready; waiting for the maintenance window that opens at ${new Date(next).toISOString()} (needs ${minutes} minute(s) for the install)`
          : `content ready; no maintenance window of this device in the next 400 days stays open the ${minutes} minute(s) the install may take; waiting for the windows to change`
        this.init.logger.info({ taskId: this.task.taskId, windowAt: next }, 'waiting for a maintenance window')
        await this.report({ state: 'waiting-for-window', message, bytesDone: this.bytesTotal, ...(next !== undefined ? { windowAt: next } : {}) })
        reported = next
      }
      await windows.sleep(next, this.signal)
    }
  }

  /**
   * Downloads the packages and assembles their files. Chunks the cache held
   * that fail their hash at assembly (bit rot, a damaged disk) are dropped
   * and fetched again at once, within the attempt: the device is not at
   * fault, and waiting a retry delay for them would help nothing.
   */
  private async fetchAndAssemble (packages: readonly ManifestPackage[], workDir: string): Promise<Map<string, string>> {
    this.phase = 'downloading'
    await this.download(packages)
    await this.report({ state: 'verifying', bytesDone: this.bytesTotal })
    const files = new Map<string, string>()
    for (const [index, pkg] of packages.entries()) {
      const folder = join(workDir, `package-${index}`)
      await mkdir(folder, { recursive: true, mode: 0o700 })
      for (let refetch = 0; ; refetch++) {
        try {
          files.set(pkg.id, await assemblePackage(pkg, this.init.cache, folder, this.signal))
          break
        } catch (error) {
          if (!(error instanceof CachedChunksCorruptError) || refetch >= MAX_ASSEMBLY_REFETCHES) throw error
          this.init.logger.warn({ taskId: this.task.taskId, chunks: error.chunks.length, refetch: refetch + 1 }, 'cached chunks failed their hash at assembly; fetching them again')
          this.phase = 'downloading'
          await this.download([pkg])
        }
      }
      this.verifyPublisher(pkg)
    }
    return files
  }


  /** Evaluates the detection rule; undefined when the package has none (the install state cannot be determined). */
  private async detect (): Promise<DetectionResult | undefined> {
    const rule = this.manifest.install.detection
    if (rule === undefined || this.manifest.action === 'distribute-files') return undefined
    return await detect(rule, this.context)
  }

  /** The publisher signature the coordinator checked at upload, checked again against the file just assembled. */
  private verifyPublisher (pkg: ManifestPackage): void {
    const signature = pkg.publisherSignature
    if (signature === undefined) return
    verifyPackageSignature(pkg.sha256, signature, publicKeyFromHex(signature.publicKey))
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
    const windows = this.init.windows
    if (plan.action === 'reboot' && this.manifest.conditions.maintenanceWindows === 'respect' && windows !== undefined && !windows.openNow()) {
      // The reboot waits for a maintenance window; the agent makes it then (and after its own restart).
      const slot = windows.slotFor(REBOOT_WINDOW_MS)
      this.task = { ...this.task, bootId: await (this.init.bootId ?? systemBootId)(), pendingReboot: { delaySeconds: plan.delaySeconds, message: plan.message, forceCloseApps: plan.forceCloseApps } }
      const when = slot !== undefined ? `the maintenance window at ${new Date(slot.startMs).toISOString()}` : 'a maintenance window (none fits yet)'
      await this.report({ state: 'succeeded-reboot-pending', exitCode, message: `${message}; ${plan.reason.replace(/: restarting now$/, '')}; the reboot waits for ${when}`.slice(0, 3900), bytesDone, ...(slot !== undefined ? { windowAt: slot.startMs } : {}) })
      return this.task
    }
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

  /** Room for the chunks still missing and for the assembled files, before a byte is written. */
  private async ensureSpace (packages: readonly ManifestPackage[]): Promise<void> {
    let missingBytes = 0
    for (const pkg of packages) {
      for (const [index, sha256] of pkg.chunks.entries()) if (!this.init.cache.has(sha256)) missingBytes += chunkLengthOf(pkg, index)
      missingBytes += pkg.sizeBytes
    }
    await ensureFreeSpace(this.init.dataDir, missingBytes)
  }

  /** Brings every package of the attempt into the cache, one after the other, reporting progress over them all. */
  private async download (packages: readonly ManifestPackage[]): Promise<void> {
    const { manifest } = this
    await this.ensureSpace(packages)
    const interval = this.init.progressIntervalMs ?? 1000
    let lastReport = 0
    let pending: Promise<void> = Promise.resolve()
    const bucket = manifest.limits.bandwidthKBps !== undefined
      ? new TokenBucket({ bytesPerSecond: manifest.limits.bandwidthKBps * BYTES_PER_KB })
      : undefined
    await this.report({ state: 'downloading' })
    let doneBefore = 0
    try {
      for (const pkg of packages) {
        const baseFromOrigin = this.task.bytesFromOrigin
        const baseFromPeers = this.task.bytesFromPeers
        const progress = await this.init.fetchPackage({
          taskId: manifest.taskId,
          pkg,
          ...(bucket !== undefined ? { bucket } : {}),
          signal: this.signal,
          onProgress: current => {
            this.task.bytesFromOrigin = baseFromOrigin + current.bytesFromOrigin
            this.task.bytesFromPeers = baseFromPeers + current.bytesFromPeers
            const now = this.now()
            // Pieces that land after the attempt was stopped are not reported: the agent may be closing its store.
            if (this.signal.aborted || now - lastReport < interval || current.chunksDone === current.chunksTotal) return
            lastReport = now
            const overall = { ...current, bytesTotal: this.bytesTotal, bytesDone: doneBefore + current.bytesDone }
            pending = pending.then(async () => { await this.report({ state: 'downloading' }, overall) })
          }
        })
        // A progress report under way replaces the task's local state when it is recorded: the final counts go in after it.
        await pending.catch(() => {})
        this.task.bytesFromOrigin = baseFromOrigin + progress.bytesFromOrigin
        this.task.bytesFromPeers = baseFromPeers + progress.bytesFromPeers
        doneBefore += pkg.sizeBytes
      }
    } finally {
      // A progress report still under way ends before the attempt does (and before the agent closes its store).
      await pending.catch(() => {})
    }
  }

  private async fail (error: unknown): Promise<LocalTask> {
    // An installer that finds the package is not for this device (a capture of another distribution) says so like the platform check.
    if (error instanceof NotApplicableError) {
      await this.report({ state: 'not-applicable', message: error.message.slice(0, 3900), bytesDone: this.manifest.package.sizeBytes })
      return this.task
    }
    if (error instanceof DiskFullError) return await this.transientFailure(error, `${error.message}; free some space`)
    if (isNoSpaceError(error)) return await this.transientFailure(error, `the disk holding ${this.init.dataDir} is full (${describeError(error)}); free some space`)
    if (error instanceof ChunkUnavailableError && isUnreachable(error.cause)) return await this.transientFailure(error, `the origin is out of reach and no site peer holds chunk ${error.index} (${describeError(error.cause)})`)
    const failures = this.task.failures + 1
    const maxAttempts = this.manifest.limits.maxAttempts
    const final = failures >= maxAttempts || isFinalError(error)
    const exitCode = error instanceof Error && INSTALLER_ERRORS.has(error.name) ? (error as { exitCode?: number | null }).exitCode : undefined
    const retryAt = final ? undefined : this.now() + this.manifest.limits.retryDelaySeconds * 1000
    const parts = [describeError(error), `attempt ${this.task.attempt} of ${maxAttempts}`]
    if (retryAt !== undefined) parts.push(`next try at ${new Date(retryAt).toISOString()}`)
    else if (failures < maxAttempts) parts.push('not retried: another attempt cannot fix this')
    else parts.push('no attempts left')
    const outputTail = error instanceof Error && INSTALLER_ERRORS.has(error.name) ? (error as InstallFailedError).outputTail : ''
    if (outputTail !== '') parts.push(`output: ${outputTail.slice(-1500)}`)
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
