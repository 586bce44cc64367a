import { SUCCESS_STATES, type StatusRecord } from '../../protocol/index.js'
import type { Store, TaskRecord, WriteOperation } from '../store/types.js'

/**
 * Which packages devices hold, as their detection rules reported it: an
 * install that succeeded (or found the package already installed) adds the
 * package; an uninstall that succeeded, or an install that replaced a
 * superseded package, removes it. Kept in memory per package (the device
 * sets a superseding task targets), written through to the store.
 */
export class InstallationIndex {
  private readonly store: Store
  private readonly byPackage = new Map<string, Set<string>>()
  private version_ = 0

  constructor (init: { store: Store }) {
    this.store = init.store
  }

  async open (): Promise<void> {
    for await (const record of this.store.collections.installations.values()) this.add(record.packageId, record.deviceId)
  }

  /** Takes in installations another coordinator recorded (by key). */
  async learn (keys: readonly string[]): Promise<void> {
    for (const record of await this.store.collections.installations.getMany([...keys])) {
      if (record !== undefined) this.add(record.packageId, record.deviceId)
    }
  }

  private add (packageId: string, deviceId: string): boolean {
    let devices = this.byPackage.get(packageId)
    if (devices === undefined) this.byPackage.set(packageId, devices = new Set())
    if (devices.has(deviceId)) return false
    devices.add(deviceId)
    this.version_++
    return true
  }

  private remove (packageId: string, deviceId: string): boolean {
    const removed = this.byPackage.get(packageId)?.delete(deviceId) === true
    if (removed) this.version_++
    return removed
  }

  /** Grows with every installation taken in or dropped: targets by installed package may resolve differently. */
  get version (): number {
    return this.version_
  }

  /** Whether the device reported the package installed. */
  has (packageId: string, deviceId: string): boolean {
    return this.byPackage.get(packageId)?.has(deviceId) === true
  }

  /** The devices that hold the package. */
  devicesOf (packageId: string): ReadonlySet<string> {
    return this.byPackage.get(packageId) ?? new Set()
  }

  /** How many devices hold the package. */
  count (packageId: string): number {
    return this.byPackage.get(packageId)?.size ?? 0
  }

  /**
   * Folds devices' newest records in; resolves with whether a device gained a
   * package (a superseding task may now target it).
   */
  async note (records: readonly StatusRecord[], taskOf: (taskId: string) => Promise<TaskRecord | undefined>): Promise<boolean> {
    const operations: WriteOperation[] = []
    let gained = false
    for (const record of records) {
      // Only outcomes change what a device holds; progress records cost nothing here.
      if (!SUCCESS_STATES.has(record.state)) continue
      const task = await taskOf(record.taskId)
      if (task === undefined) continue
      const key = (packageId: string): string => `${packageId}!${record.deviceId}`
      if (task.action === 'install' && SUCCESS_STATES.has(record.state)) {
        if (this.add(task.packageId, record.deviceId)) {
          gained = true
          operations.push({ type: 'put', collection: 'installations', key: key(task.packageId), value: { packageId: task.packageId, deviceId: record.deviceId, at: new Date(record.at).toISOString(), taskId: task.id } })
        }
        for (const replaced of replacedBy(task)) {
          if (this.remove(replaced, record.deviceId)) operations.push({ type: 'del', collection: 'installations', key: key(replaced) })
        }
      } else if (task.action === 'uninstall' && record.state === 'succeeded') {
        if (this.remove(task.packageId, record.deviceId)) operations.push({ type: 'del', collection: 'installations', key: key(task.packageId) })
      }
    }
    if (operations.length > 0) await this.store.write(operations)
    return gained
  }
}

/** Packages an install task's manifest replaces (removes before installing). */
function replacedBy (task: TaskRecord): string[] {
  try {
    const manifest = JSON.parse(Buffer.from(task.manifest.payload, 'base64').toString('utf8')) as { supersedes?: Array<{ mode?: string, package?: { id?: string } }> }
    return (manifest.supersedes ?? []).filter(entry => entry.mode === 'replace' && typeof entry.package?.id === 'string').map(entry => entry.package!.id!)
  } catch {
    return []
  }
}
