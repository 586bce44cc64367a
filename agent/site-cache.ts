import { describeError, type Manifest, type SignedEnvelope } from '../protocol/index.js'
import type { Logger } from '../protocol/logger.js'
import type { ChunkCache } from './cache.js'
import type { PackageFetcher } from './download/downloader.js'
import { TokenBucket } from './download/token-bucket.js'
import { BYTES_PER_KB } from './tasks/runner.js'
import { RefusalLog } from './refusals.js'

/** Wait before a failed prefetch is tried again. */
export const PREFETCH_RETRY_MS = 60_000

export interface PrefetcherInit {
  cache: ChunkCache
  fetchPackage: PackageFetcher
  /** Verifies a manifest envelope for the task as the agent does for its own assignments; throws when it does not hold. */
  verify: (taskId: string, envelope: SignedEnvelope) => Manifest
  logger: Logger
  /** Where refused manifests are logged. @default a refusal log on `logger` */
  refusals?: RefusalLog
}

interface Prefetch {
  taskId: string
  revision: number
  packageId: string
  controller: AbortController
  done: Promise<void>
  retry?: NodeJS.Timeout
}

/** A pin holder name for a prefetched task. */
export const prefetchHolder = (taskId: string): string => `prefetch:${taskId}`

/**
 * The site cache role (a distribution point): packages of the tasks that
 * target its site are fetched as soon as they exist and kept pinned while
 * the tasks run, so the site's devices find the content on the LAN.
 */
export class Prefetcher {
  private readonly init: PrefetcherInit
  private readonly active = new Map<string, Prefetch>()
  private readonly refusals: RefusalLog
  private stopped = false

  constructor (init: PrefetcherInit) {
    this.init = init
    this.refusals = init.refusals ?? new RefusalLog({ logger: init.logger })
  }

  /** Brings the prefetches in line with the coordinator's list. */
  apply (items: Array<{ taskId: string, revision: number, manifest: SignedEnvelope }>): void {
    if (this.stopped) return
    const listed = new Set(items.map(item => item.taskId))
    for (const [taskId, prefetch] of this.active) {
      if (listed.has(taskId)) continue
      this.drop(prefetch)
    }
    for (const item of items) {
      const existing = this.active.get(item.taskId)
      if (existing !== undefined && existing.revision === item.revision) continue
      if (existing !== undefined) this.drop(existing)
      let manifest: Manifest
      try {
        manifest = this.init.verify(item.taskId, item.manifest)
      } catch (error) {
        this.refusals.refuse({ subject: 'manifest', reason: (error as { reason?: string }).reason ?? 'refused', taskId: item.taskId, message: `not prefetched: ${describeError(error)}` })
        continue
      }
      this.begin(manifest)
    }
  }

  private drop (prefetch: Prefetch): void {
    prefetch.controller.abort(new Error('no longer listed'))
    if (prefetch.retry !== undefined) clearTimeout(prefetch.retry)
    this.active.delete(prefetch.taskId)
    this.init.cache.unpin(prefetch.packageId, prefetchHolder(prefetch.taskId))
    this.init.logger.info({ taskId: prefetch.taskId, packageId: prefetch.packageId }, 'prefetched package released')
  }

  private begin (manifest: Manifest): void {
    const controller = new AbortController()
    this.init.cache.pin(manifest.package, prefetchHolder(manifest.taskId))
    const prefetch: Prefetch = { taskId: manifest.taskId, revision: manifest.revision, packageId: manifest.package.id, controller, done: Promise.resolve() }
    this.active.set(manifest.taskId, prefetch)
    const attempt = async (): Promise<void> => {
      const started = Date.now()
      try {
        const bucket = manifest.limits.bandwidthKBps !== undefined ? new TokenBucket({ bytesPerSecond: manifest.limits.bandwidthKBps * BYTES_PER_KB }) : undefined
        const progress = await this.init.fetchPackage({ taskId: manifest.taskId, pkg: manifest.package, ...(bucket !== undefined ? { bucket } : {}), signal: controller.signal })
        this.init.logger.info({ taskId: manifest.taskId, packageId: manifest.package.id, bytesFromPeers: progress.bytesFromPeers, bytesFromOrigin: progress.bytesFromOrigin, ms: Date.now() - started }, 'package prefetched for the site')
      } catch (error) {
        if (controller.signal.aborted || this.stopped) return
        this.init.logger.warn({ taskId: manifest.taskId, err: describeError(error), retryInMs: PREFETCH_RETRY_MS }, 'prefetch failed')
        prefetch.retry = setTimeout(() => { prefetch.done = attempt() }, PREFETCH_RETRY_MS)
        prefetch.retry.unref()
      }
    }
    prefetch.done = attempt()
  }

  async stop (): Promise<void> {
    this.stopped = true
    for (const prefetch of this.active.values()) {
      prefetch.controller.abort(new Error('the agent stops'))
      if (prefetch.retry !== undefined) clearTimeout(prefetch.retry)
    }
    await Promise.all([...this.active.values()].map(async prefetch => { await prefetch.done }))
  }
}
