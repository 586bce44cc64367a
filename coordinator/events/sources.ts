import type { StatusRecord } from '../../protocol/index.js'
import { rowOf, type StatusService } from '../agents/statuses.js'
import type { DeviceService } from '../devices/service.js'
import type { TaskService } from '../tasks/service.js'
import type { EventJournal } from './journal.js'

export interface EventSourcesInit {
  journal: EventJournal
  statuses: StatusService
  tasks: TaskService
  devices: DeviceService
  onError?: (error: unknown) => void
}

/** What operators see of a status record: the device's new row in the task, as the coordinator stores it. */
export function statusEventData (record: StatusRecord): Record<string, unknown> {
  const { updatedAt, ...data } = rowOf(record, new Date(record.at).toISOString())
  void updatedAt
  return data
}

/**
 * Feeds the journal from the domain services: every stored status record,
 * every task change and every device change becomes an event.
 */
export function connectEventSources (init: EventSourcesInit): () => void {
  const { journal, statuses, tasks, devices } = init
  const onError = init.onError ?? (() => {})
  const onRecords = (records: StatusRecord[]): void => {
    for (const record of records) journal.append('status', statusEventData(record), record.taskId)
  }
  // Another coordinator's change was announced to operators by that coordinator.
  const onTaskChanged = (taskId: string, origin?: 'remote'): void => {
    if (origin === 'remote') return
    tasks.get(taskId).then(
      task => { journal.append('task', { taskId, name: task.name, status: task.status, revision: task.revision, updatedAt: task.updatedAt }, taskId) },
      error => {
        if ((error as Error).name === 'NotFoundError') journal.append('task', { taskId, deleted: true }, taskId)
        else onError(error)
      }
    )
  }
  const onDeviceChanged = (deviceId: string, origin?: 'remote'): void => {
    if (origin === 'remote') return
    devices.get(deviceId).then(
      device => {
        const view = devices.view(device)
        const data: Record<string, unknown> = { deviceId, hostname: view.hostname, site: view.site, groups: view.groups, platform: view.platform, status: view.status, online: view.online }
        if (view.lastSeenAt !== undefined) data.lastSeenAt = view.lastSeenAt
        journal.append('device', data)
      },
      error => {
        if ((error as Error).name === 'NotFoundError') journal.append('device', { deviceId, deleted: true })
        else onError(error)
      }
    )
  }
  statuses.on('records', onRecords)
  tasks.on('changed', onTaskChanged)
  devices.on('changed', onDeviceChanged)
  return () => {
    statuses.off('records', onRecords)
    tasks.off('changed', onTaskChanged)
    devices.off('changed', onDeviceChanged)
  }
}
