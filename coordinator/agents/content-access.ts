import { contentPackagesOf, fromBase64, fromUtf8, type Manifest } from '../../protocol/index.js'
import type { DeviceRecord, PackageRecord, TaskRecord } from '../store/types.js'

/** Packages whose chunk sets are kept in memory at most (those of the tasks running now, in practice). */
export const DEFAULT_CACHED_PACKAGES = 64
/** A device whose chunk request names no package it was handed has its list worked out again at most this often. */
export const DEFAULT_RECHECK_INTERVAL_MS = 10_000
/** Tasks whose manifests' package lists are remembered at most. */
const MAX_REMEMBERED_TASKS = 4096

/** What a device was handed in its latest assignments answer. */
export interface HandedList {
  assignments: ReadonlyArray<{ taskId: string }>
  prefetch: ReadonlyArray<{ taskId: string }>
}

export interface ContentAccessInit {
  findPackage: (packageId: string) => Promise<PackageRecord | undefined>
  /** The tasks that may still hand out manifests. */
  openTasks: () => TaskRecord[]
  /** The device's assignments answer, worked out now (for a device not heard from since the coordinator started). */
  listFor: (device: DeviceRecord) => Promise<HandedList>
  now?: () => number
  /** @default DEFAULT_CACHED_PACKAGES */
  cachedPackages?: number
  /** @default DEFAULT_RECHECK_INTERVAL_MS */
  recheckIntervalMs?: number
}

/**
 * Decides which chunks the origin serves a device: only chunks of the
 * packages its assignments answer handed it — its own tasks (with their
 * dependencies and the superseded packages they remove), and for a
 * site cache an operator granted, the packages it prefetches. Cheap per
 * request: an index from device to the packages it was handed (filled as
 * answers go out) and, for those packages, their chunk sets.
 */
export class ContentAccess {
  private readonly init: ContentAccessInit
  private readonly now: () => number
  private readonly handed = new Map<string, { packageIds: ReadonlySet<string>, at: number }>()
  /** Task id → the packages its manifest (at that revision) hands out. */
  private readonly taskPackages = new Map<string, { revision: number, packageIds: readonly string[] }>()
  /** Package id → its chunks, least recently used first. */
  private readonly chunkSets = new Map<string, ReadonlySet<string>>()

  constructor (init: ContentAccessInit) {
    this.init = init
    this.now = init.now ?? Date.now
  }

  /** Notes the packages of an answer that goes out to a device. */
  noteAnswer (deviceId: string, list: HandedList): void {
    const taskIds = new Set([...list.assignments, ...list.prefetch].map(item => item.taskId))
    const packageIds = new Set<string>()
    if (taskIds.size > 0) {
      for (const task of this.init.openTasks()) {
        if (taskIds.has(task.id)) for (const packageId of this.packagesOf(task)) packageIds.add(packageId)
      }
    }
    this.handed.set(deviceId, { packageIds, at: this.now() })
  }

  /** The packages a task's signed manifest has its devices download: its own, its dependencies', superseded ones it removes from their content. */
  private packagesOf (task: TaskRecord): readonly string[] {
    const known = this.taskPackages.get(task.id)
    if (known !== undefined && known.revision === task.revision) return known.packageIds
    let packageIds = [task.packageId]
    try {
      const manifest = JSON.parse(fromUtf8(fromBase64(task.manifest.payload))) as Manifest
      packageIds = [...new Set([task.packageId, ...contentPackagesOf(manifest).map(pkg => pkg.id)])]
    } catch {
      // A manifest this coordinator signed always parses; should it not, the task's own package is what it hands out.
    }
    this.taskPackages.set(task.id, { revision: task.revision, packageIds })
    while (this.taskPackages.size > MAX_REMEMBERED_TASKS) {
      const [oldest] = this.taskPackages.keys()
      this.taskPackages.delete(oldest)
    }
    return packageIds
  }

  /** Forgets a device (blocked, retired). */
  forget (deviceId: string): void {
    this.handed.delete(deviceId)
  }

  /** Whether the origin may serve the chunk to the device. */
  async allows (device: DeviceRecord, sha256: string): Promise<boolean> {
    const entry = this.handed.get(device.id)
    if (entry !== undefined && await this.holds(entry.packageIds, sha256)) return true
    // Not in what the device was last handed: its list may have grown since (or this coordinator restarted); work it out again, now and then.
    if (entry !== undefined && this.now() - entry.at < (this.init.recheckIntervalMs ?? DEFAULT_RECHECK_INTERVAL_MS)) return false
    this.noteAnswer(device.id, await this.init.listFor(device))
    return await this.holds(this.handed.get(device.id)!.packageIds, sha256)
  }

  private async holds (packageIds: ReadonlySet<string>, sha256: string): Promise<boolean> {
    for (const packageId of packageIds) if ((await this.chunksOf(packageId)).has(sha256)) return true
    return false
  }

  private async chunksOf (packageId: string): Promise<ReadonlySet<string>> {
    let chunks = this.chunkSets.get(packageId)
    if (chunks !== undefined) {
      this.chunkSets.delete(packageId)
    } else {
      chunks = new Set((await this.init.findPackage(packageId))?.chunks ?? [])
    }
    this.chunkSets.set(packageId, chunks)
    while (this.chunkSets.size > (this.init.cachedPackages ?? DEFAULT_CACHED_PACKAGES)) {
      const [oldest] = this.chunkSets.keys()
      this.chunkSets.delete(oldest)
    }
    return chunks
  }
}
