import type { Store } from '../store/types.js'
import { deviceTaskKey } from '../store/types.js'
import { pruneReleases } from './release-rate.js'

/**
 * Which devices the scheduler has released for each task, and when the
 * recent ones were released (for rate control). Kept in memory, written
 * through to the store so that a restarted coordinator neither releases a
 * device twice nor exceeds a rate.
 */
export class ReleaseLedger {
  private readonly store: Store
  private readonly released = new Map<string, Map<string, number>>()
  private readonly recent = new Map<string, number[]>()

  constructor (init: { store: Store }) {
    this.store = init.store
  }

  async open (): Promise<void> {
    for await (const release of this.store.collections.releases.values()) this.remember(release.taskId, release.deviceId, release.releasedAt)
  }

  private remember (taskId: string, deviceId: string, at: number): void {
    let devices = this.released.get(taskId)
    if (devices === undefined) this.released.set(taskId, devices = new Map())
    devices.set(deviceId, at)
    const times = this.recent.get(taskId) ?? []
    times.push(at)
    this.recent.set(taskId, times)
  }

  isReleased (taskId: string, deviceId: string): boolean {
    return this.released.get(taskId)?.has(deviceId) === true
  }

  releasedAt (taskId: string, deviceId: string): number | undefined {
    return this.released.get(taskId)?.get(deviceId)
  }

  count (taskId: string): number {
    return this.released.get(taskId)?.size ?? 0
  }

  /** Release times of the task that still count for its rate. */
  recentReleases (taskId: string, nowMs: number): number[] {
    const pruned = pruneReleases(this.recent.get(taskId) ?? [], nowMs)
    this.recent.set(taskId, pruned)
    return pruned
  }

  async release (taskId: string, deviceIds: readonly string[], at: number): Promise<void> {
    if (deviceIds.length === 0) return
    await this.store.write(deviceIds.map(deviceId => ({ type: 'put' as const, collection: 'releases' as const, key: deviceTaskKey(taskId, deviceId), value: { taskId, deviceId, releasedAt: at } })))
    for (const deviceId of deviceIds) this.remember(taskId, deviceId, at)
  }
}
