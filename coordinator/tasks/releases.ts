import { randomBytes } from 'node:crypto'
import type { ReleaseRecord, Store, WriteOperation } from '../store/types.js'
import { pruneReleases } from './release-rate.js'

/** Device ids in one stored release record at most; a larger release is split. */
export const MAX_DEVICES_PER_RELEASE_RECORD = 10_000

/** A release record as stores made before releases were grouped kept it: one device each. */
interface SingleReleaseRecord {
  taskId: string
  deviceId: string
  releasedAt: number
}

function releaseKey (taskId: string, at: number): string {
  return `${taskId}!${at.toString().padStart(15, '0')}!${randomBytes(4).toString('hex')}`
}

/**
 * Which devices the scheduler has released for each task, and when the
 * recent ones were released (for rate control). Kept in memory, written
 * through to the store (one record per release, however many devices it
 * holds) so that a restarted coordinator neither releases a device twice
 * nor exceeds a rate.
 */
export class ReleaseLedger {
  private readonly store: Store
  private readonly released = new Map<string, Map<string, number>>()
  private readonly recent = new Map<string, number[]>()
  /** The released device ids of a task in order, for paging; rebuilt after a release. */
  private readonly ordered = new Map<string, string[]>()

  constructor (init: { store: Store }) {
    this.store = init.store
  }

  async open (): Promise<void> {
    for await (const record of this.store.collections.releases.values()) {
      const legacy = record as unknown as Partial<SingleReleaseRecord>
      if (typeof legacy.deviceId === 'string') this.remember(record.taskId, [legacy.deviceId], record.releasedAt)
      else this.remember(record.taskId, record.deviceIds, record.releasedAt)
    }
  }

  /**
   * Takes in releases another coordinator sharing the store recorded (by
   * key); returns them, so that the devices' held requests can be woken.
   */
  async learn (keys: readonly string[]): Promise<Array<{ taskId: string, deviceIds: string[] }>> {
    const records = await this.store.collections.releases.getMany([...keys])
    const learned: Array<{ taskId: string, deviceIds: string[] }> = []
    for (const record of records) {
      if (record === undefined) continue
      const known = this.released.get(record.taskId)
      const fresh = record.deviceIds.filter(deviceId => known?.has(deviceId) !== true)
      if (fresh.length === 0) continue
      this.remember(record.taskId, fresh, record.releasedAt)
      learned.push({ taskId: record.taskId, deviceIds: fresh })
    }
    return learned
  }

  private remember (taskId: string, deviceIds: readonly string[], at: number): void {
    let devices = this.released.get(taskId)
    if (devices === undefined) this.released.set(taskId, devices = new Map())
    for (const deviceId of deviceIds) devices.set(deviceId, at)
    const times = this.recent.get(taskId) ?? []
    for (let i = 0; i < deviceIds.length; i++) times.push(at)
    this.recent.set(taskId, pruneReleases(times, at))
    this.ordered.delete(taskId)
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

  /** Every device released for the task, in id order. */
  releasedIds (taskId: string): readonly string[] {
    let ids = this.ordered.get(taskId)
    if (ids === undefined) {
      ids = [...(this.released.get(taskId)?.keys() ?? [])].sort()
      this.ordered.set(taskId, ids)
    }
    return ids
  }

  /** Release times of the task that still count for its rate. */
  recentReleases (taskId: string, nowMs: number): number[] {
    const pruned = pruneReleases(this.recent.get(taskId) ?? [], nowMs)
    this.recent.set(taskId, pruned)
    return pruned
  }

  /** Records a release durably, then remembers it. */
  async release (taskId: string, deviceIds: readonly string[], at: number): Promise<void> {
    if (deviceIds.length === 0) return
    const operations: WriteOperation[] = []
    for (let start = 0; start < deviceIds.length; start += MAX_DEVICES_PER_RELEASE_RECORD) {
      const value: ReleaseRecord = { taskId, releasedAt: at, deviceIds: deviceIds.slice(start, start + MAX_DEVICES_PER_RELEASE_RECORD) }
      operations.push({ type: 'put', collection: 'releases', key: releaseKey(taskId, at), value })
    }
    await this.store.write(operations)
    this.remember(taskId, deviceIds, at)
  }
}
