import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { describeError, type DeviceTaskState, type Manifest } from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import type { ChunkCache } from '../cache.js'
import type { DownloadProgress, PackageFetcher } from '../download/downloader.js'
import { TokenBucket } from '../download/token-bucket.js'
import { DetectionFailedError, InstallFailedError } from '../errors.js'
import { detect } from '../install/detection.js'
import { install } from '../install/installer.js'
import type { Outbox, StatusFields } from '../outbox.js'
import { applicabilityProblem } from '../platform.js'
import type { AgentStore, LocalTask } from '../state/store.js'
import { assemblePackage } from './assemble.js'

const IN_PROGRESS_STATES: ReadonlySet<DeviceTaskState> = new Set(['downloading', 'verifying', 'installing'])

/** Wait before retrying after an installer asked to (1618: another installation in progress). */
export const RETRY_SOON_MS = 5 * 60 * 1000
/** KB/s in a task's bandwidth cap are 1024 bytes per second. */
export const BYTES_PER_KB = 1024

export interface RunnerInit {
  store: AgentStore
  outbox: Outbox
  cache: ChunkCache
  /** Brings the package's chunks into the cache. */
  fetchPackage: PackageFetcher
  logger: Logger
  dataDir: string
  installRoot: string
  /** Least time between two progress records of a download. @default 1000 */
  progressIntervalMs?: number
  now?: () => number
}

/**
 * Runs one attempt of a task on this device: applicability, detection,
 * download, verification, install, detection again; every step becomes a
 * signed status record. The manifest was verified by the caller.
 */
export class TaskRunner {
  private readonly init: RunnerInit
  private readonly now: () => number
  private task: LocalTask
  private readonly manifest: Manifest
  /** Aborted when the task is withdrawn or the agent stops. */
  private readonly signal: AbortSignal
  private readonly shutdown: AbortSignal
  /** Set once the installer has started: from then on the attempt runs to its end. */
  installing = false

  /**
   * @param withdrawn aborted when the coordinator withdraws the task: the attempt ends as cancelled
   * @param shutdown aborted when the agent stops: the attempt ends without a report and resumes at the next start
   */
  constructor (init: RunnerInit, task: LocalTask, manifest: Manifest, withdrawn: AbortSignal, shutdown: AbortSignal) {
    this.init = init
    this.now = init.now ?? Date.now
    this.task = task
    this.manifest = manifest
    this.shutdown = shutdown
    this.signal = AbortSignal.any([withdrawn, shutdown])
  }

  private async report (fields: Partial<StatusFields> & Pick<StatusFields, 'state'>, progress?: DownloadProgress): Promise<void> {
    const full: StatusFields = {
      bytesTotal: progress?.bytesTotal ?? this.manifest.package.sizeBytes,
      bytesDone: progress?.bytesDone ?? 0,
      bytesFromPeers: this.task.bytesFromPeers,
      bytesFromOrigin: this.task.bytesFromOrigin,
      ...fields
    }
    this.task = await this.init.outbox.record(this.task, full)
  }

  /** Runs the attempt to its end and returns the task's final local state. */
  async run (): Promise<LocalTask> {
    const { manifest } = this
    const workDir = join(this.init.dataDir, 'work', manifest.taskId)
    // An attempt that a stop or a crash interrupted goes on under its own number.
    const interrupted = this.task.attempt > 0 && IN_PROGRESS_STATES.has(this.task.state)
    this.task = { ...this.task, attempt: interrupted ? this.task.attempt : this.task.attempt + 1 }
    delete this.task.retryAt
    try {
      const problem = applicabilityProblem(manifest.package)
      if (problem !== undefined) {
        await this.report({ state: 'not-applicable', message: problem, bytesTotal: 0 })
        return this.task
      }
      if (manifest.action === 'install' && manifest.install.detection !== undefined) {
        const before = await detect(manifest.install.detection, this.init.installRoot, this.signal)
        if (before.installed) {
          await this.report({ state: 'already-installed', message: before.detail, bytesTotal: 0 })
          return this.task
        }
      }
      await this.download()
      await this.report({ state: 'verifying', bytesDone: manifest.package.sizeBytes })
      await rm(workDir, { recursive: true, force: true })
      await mkdir(workDir, { recursive: true, mode: 0o700 })
      const file = await assemblePackage(manifest.package, this.init.cache, workDir, this.signal)
      this.signal.throwIfAborted()
      this.installing = true
      await this.report({ state: 'installing', bytesDone: manifest.package.sizeBytes })
      const outcome = await install(manifest, file, { installRoot: this.init.installRoot, workDir })
      if (outcome.outcome === 'failure') throw new InstallFailedError(outcome.message, outcome.exitCode, outcome.outputTail)
      if (outcome.outcome === 'retry') {
        await this.report({ state: 'failed', exitCode: outcome.exitCode, message: `${outcome.message}: another installation is in progress; trying again soon`, retryAt: this.now() + RETRY_SOON_MS, bytesDone: manifest.package.sizeBytes })
        this.task = { ...this.task, attempt: this.task.attempt - 1, retryAt: this.now() + RETRY_SOON_MS }
        await this.init.store.putTask(this.task)
        return this.task
      }
      if (manifest.install.detection !== undefined) {
        const after = await detect(manifest.install.detection, this.init.installRoot)
        if (!after.installed) throw new DetectionFailedError(`${outcome.message}, but the detection rule does not hold: ${after.detail}`)
      }
      const state = outcome.outcome === 'success' ? 'succeeded' : 'succeeded-reboot-pending'
      await this.report({ state, exitCode: outcome.exitCode, message: outcome.message, bytesDone: manifest.package.sizeBytes })
      return this.task
    } catch (error) {
      if (this.shutdown.aborted) return this.task
      if (this.signal.aborted && !this.installing) {
        await this.report({ state: 'cancelled', message: 'the task was withdrawn' })
        return this.task
      }
      return await this.fail(error)
    } finally {
      await rm(workDir, { recursive: true, force: true }).catch(() => {})
    }
  }

  private async download (): Promise<void> {
    const { manifest } = this
    const interval = this.init.progressIntervalMs ?? 1000
    let lastReport = 0
    let pending: Promise<void> = Promise.resolve()
    const baseFromOrigin = this.task.bytesFromOrigin
    const baseFromPeers = this.task.bytesFromPeers
    const bucket = manifest.limits.bandwidthKBps !== undefined
      ? new TokenBucket({ bytesPerSecond: manifest.limits.bandwidthKBps * BYTES_PER_KB })
      : undefined
    await this.report({ state: 'downloading' })
    const progress = await this.init.fetchPackage({
      taskId: manifest.taskId,
      pkg: manifest.package,
      ...(bucket !== undefined ? { bucket } : {}),
      signal: this.signal,
      onProgress: current => {
        this.task.bytesFromOrigin = baseFromOrigin + current.bytesFromOrigin
        this.task.bytesFromPeers = baseFromPeers + current.bytesFromPeers
        const now = this.now()
        if (now - lastReport < interval || current.chunksDone === current.chunksTotal) return
        lastReport = now
        pending = pending.then(async () => { await this.report({ state: 'downloading' }, current) })
      }
    })
    await pending
    this.task.bytesFromOrigin = baseFromOrigin + progress.bytesFromOrigin
    this.task.bytesFromPeers = baseFromPeers + progress.bytesFromPeers
  }

  private async fail (error: unknown): Promise<LocalTask> {
    const failures = this.task.failures + 1
    const maxAttempts = this.manifest.limits.maxAttempts
    const final = failures >= maxAttempts
    const exitCode = error instanceof InstallFailedError ? error.exitCode : undefined
    const retryAt = final ? undefined : this.now() + this.manifest.limits.retryDelaySeconds * 1000
    const parts = [describeError(error), `attempt ${this.task.attempt} of ${maxAttempts}`]
    if (retryAt !== undefined) parts.push(`next try at ${new Date(retryAt).toISOString()}`)
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
