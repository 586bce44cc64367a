import type { Logger } from '../../protocol/logger.js'
import type { AssignmentService } from '../agents/assignments.js'
import type { ContentAccess } from '../agents/content-access.js'
import type { DeviceService } from '../devices/service.js'
import type { DirectoryService } from '../directory/service.js'
import type { InstallationIndex } from '../inventory/service.js'
import type { SettingsService } from '../settings/service.js'
import type { SiteService } from '../sites/service.js'
import type { StoreChange } from '../store/changes.js'
import type { Store } from '../store/types.js'
import type { TaskService } from '../tasks/service.js'
import type { MaintenanceWindowService } from '../windows/service.js'

export interface FollowInit {
  store: Store
  tasks: TaskService
  devices: DeviceService
  sites: SiteService
  windows: MaintenanceWindowService
  settings: SettingsService
  directory: DirectoryService
  installations: InstallationIndex
  contentAccess: ContentAccess
  assignments: AssignmentService
  logger: Logger
}

/**
 * Keeps what this coordinator holds in memory in step with the other
 * coordinators of a shared store, and wakes the held requests their changes
 * concern: a task created on another coordinator reaches the devices waiting
 * here; a device released there learns of it here. Changes are applied one
 * at a time, in the order they were announced. Returns the unsubscribe.
 */
export function followOtherCoordinators (init: FollowInit): () => void {
  const feed = init.store.changes
  if (feed === undefined) return () => {}
  let queue: Promise<void> = Promise.resolve()
  const run = (what: string, work: () => Promise<void>): void => {
    queue = queue.then(work).catch(error => { init.logger.error({ err: error, what }, 'cannot take in another coordinator\'s change') })
  }
  const onChange = (change: StoreChange): void => {
    switch (change.collection) {
      case 'tasks':
        run('tasks', async () => { await init.tasks.reload(change.keys) })
        break
      case 'releases':
        run('releases', async () => {
          for (const { taskId, deviceIds } of await init.tasks.releases.learn(change.keys)) init.tasks.emit('released', taskId, deviceIds)
        })
        break
      case 'devices':
        run('devices', async () => {
          const devices = await init.store.collections.devices.getMany(change.keys)
          for (const [at, id] of change.keys.entries()) {
            const device = devices[at]
            // The registry wakes the held requests whose site samples name the device.
            if (device !== undefined) init.devices.registry.put(device)
            init.contentAccess.forget(id)
            init.devices.emit('changed', id, 'remote')
          }
        })
        break
      case 'deviceTasks':
        // Another coordinator stored status records: these devices' answers may differ (a finished task leaves the list).
        run('deviceTasks', async () => { init.assignments.noteStatus(change.keys.map(key => key.slice(key.indexOf('!') + 1))) })
        break
      case 'boundaries':
        run('boundaries', async () => { await init.sites.open() })
        break
      case 'maintenanceWindows':
        run('windows', async () => { await init.windows.reload() })
        break
      case 'meta':
        // Settings and the windows' revision live here.
        run('meta', async () => {
          await init.settings.reload()
          await init.windows.reload()
        })
        break
      case 'users':
        run('users', async () => { await init.directory.learn(change.keys) })
        break
      case 'installations':
        run('installations', async () => { await init.installations.learn(change.keys) })
        break
      default:
        // Read from the store on every use: nothing is kept here to bring up to date.
        break
    }
  }
  const onResync = (): void => {
    run('resync', async () => {
      await init.tasks.reloadAll()
      await init.sites.open()
      await init.windows.reload()
      await init.settings.reload()
      init.logger.warn('the channel to the other coordinators was lost for a while: tasks, sites, windows and settings read again')
    })
  }
  feed.on('change', onChange)
  feed.on('resync', onResync)
  return () => {
    feed.off('change', onChange)
    feed.off('resync', onResync)
  }
}
