import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import type { DeviceService } from './devices/service.js'
import type { TaskService } from './tasks/service.js'
import type { StatusService } from './agents/statuses.js'
import type { AssignmentService } from './agents/assignments.js'

export interface CoordinatorMetricsInit {
  devices: DeviceService
  tasks: TaskService
  statuses: StatusService
  /** For the held assignments requests and their wake-ups. @default not measured */
  assignments?: AssignmentService
}

/**
 * The coordinator's Prometheus metrics. Counters move as things happen;
 * gauges of tasks and devices are computed when scraped.
 */
export class CoordinatorMetrics {
  readonly registry = new Registry()
  readonly originBytes: Counter
  readonly originRequests: Counter
  readonly statusRecords: Counter<'outcome'>
  readonly statusBatches: Counter<'path'>
  readonly eventClients: Gauge
  readonly eventClientsDisconnected: Counter<'reason'>

  constructor (init: CoordinatorMetricsInit) {
    collectDefaultMetrics({ register: this.registry, prefix: 'meshdeploy_coordinator_' })
    this.originBytes = new Counter({ name: 'meshdeploy_origin_bytes_served_total', help: 'Bytes of chunks the HTTP origin served', registers: [this.registry] })
    this.originRequests = new Counter({ name: 'meshdeploy_origin_requests_total', help: 'Content requests the HTTP origin answered', registers: [this.registry] })
    this.statusRecords = new Counter({ name: 'meshdeploy_status_records_total', help: 'Status records received, by outcome', labelNames: ['outcome'], registers: [this.registry] })
    this.statusBatches = new Counter({ name: 'meshdeploy_status_batches_total', help: 'Status requests received: a device\'s own records (direct) or a site relay\'s batch (relay)', labelNames: ['path'], registers: [this.registry] })
    this.eventClients = new Gauge({ name: 'meshdeploy_event_stream_clients', help: 'Operator clients connected to GET /v1/events', registers: [this.registry] })
    this.eventClientsDisconnected = new Counter({ name: 'meshdeploy_event_stream_ends_total', help: 'Event streams ended, by reason (closed by the client, or disconnected for reading too slowly)', labelNames: ['reason'], registers: [this.registry] })
    init.statuses.on('ingested', (stored, duplicates, rejected) => {
      this.statusRecords.inc({ outcome: 'stored' }, stored)
      if (duplicates > 0) this.statusRecords.inc({ outcome: 'duplicate' }, duplicates)
      if (rejected > 0) this.statusRecords.inc({ outcome: 'rejected' }, rejected)
    })
    const { devices, tasks, assignments } = init
    if (assignments !== undefined) {
      new Gauge({ // eslint-disable-line no-new
        name: 'meshdeploy_assignment_requests_held',
        help: 'Agents\' assignments requests held open, waiting for a change that concerns them',
        registers: [this.registry],
        collect () { this.set(assignments.heldRequests) }
      })
      new Counter({ // eslint-disable-line no-new
        name: 'meshdeploy_assignment_requests_woken_total',
        help: 'Held assignments requests woken by a change that concerns them (a release, a task change, a site\'s peers)',
        registers: [this.registry],
        collect () { this.reset(); this.inc(assignments.wokenRequests()) }
      })
    }
    new Gauge({ // eslint-disable-line no-new
      name: 'meshdeploy_devices',
      help: 'Enrolled devices by status and whether they were heard from recently',
      labelNames: ['status', 'online'],
      registers: [this.registry],
      async collect () {
        this.reset()
        // Index counts and what is in memory: a scrape does not read every device.
        for (const { status, count, online } of await devices.statusCounts()) {
          if (online > 0) this.inc({ status, online: 'true' }, online)
          if (count - online > 0) this.inc({ status, online: 'false' }, count - online)
        }
      }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'meshdeploy_task_devices',
      help: 'Devices of dispatching tasks by state',
      labelNames: ['state'],
      registers: [this.registry],
      async collect () {
        this.reset()
        // From each task's progress counters: a scrape costs a few counters per task, not a read of its rows.
        for (const task of tasks.pending()) {
          const { progress } = await tasks.progress(task)
          for (const [state, count] of Object.entries(progress.counts)) if (count !== undefined && count > 0) this.inc({ state }, count)
        }
      }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'meshdeploy_tasks',
      help: 'Tasks by status',
      labelNames: ['status'],
      registers: [this.registry],
      async collect () {
        this.reset()
        for (const task of await tasks.list()) this.inc({ status: task.status })
      }
    })
  }
}
