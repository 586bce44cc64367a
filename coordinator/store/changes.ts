import { EventEmitter } from 'node:events'
import type { CollectionName } from './types.js'

/** Items another coordinator changed: their collection and keys, never their values. */
export interface StoreChange {
  collection: CollectionName
  keys: string[]
}

/**
 * What other coordinators sharing the store changed, as they commit it. A
 * coordinator's own writes are not repeated here: its services already know.
 * `resync` says changes may have been missed (the channel was lost and is
 * back): whatever is kept in memory should be read again.
 */
export class ChangeFeed extends EventEmitter<{ change: [change: StoreChange], resync: [] }> {
  constructor () {
    super()
    // One listener per service that keeps something in memory, and one per held request at most.
    this.setMaxListeners(0)
  }
}

/** Collections whose changes are announced to other coordinators: what services keep in memory or wait on. */
export const ANNOUNCED_COLLECTIONS: ReadonlySet<CollectionName> = new Set<CollectionName>([
  'packages', 'tasks', 'devices', 'deviceTasks', 'operatorTokens', 'enrollmentTokens', 'credentials', 'releases', 'users',
  'publishers', 'requests', 'sites', 'boundaries', 'maintenanceWindows', 'installations', 'meta', 'events',
  'pushCredentials', 'pushInstalls', 'hostKeys'
])
