import { z } from 'zod'
import { ACTIONS, MAX_INSTALL_TIMEOUT_SECONDS, OVERWRITE_POLICIES, WINDOW_POLICIES, fileModeSchema, rebootSchema } from '../../protocol/index.js'
import { targetsSchema } from './targets.js'
import { phasesSchema } from './phases.js'
import { label } from '../../protocol/text.js'

export const MAX_DEVICES_PER_MINUTE = 100_000
export const MAX_VALIDITY_SECONDS = 365 * 24 * 3600

const isoTime = z.iso.datetime({ offset: true })

const taskSettings = {
  targets: targetsSchema,
  name: label(z.string().trim().min(1).max(200)),
  /** A command line (split like a shell would, nothing expanded) or the arguments themselves. */
  runArgs: z.union([z.string().max(8192), z.array(label(z.string().max(4096))).max(64)]),
  bandwidthKBps: z.number().int().min(1).max(10_000_000),
  destination: label(z.string().min(1).max(1024)).regex(/^\//, 'must be an absolute path'),
  entry: label(z.string().min(1).max(255)).regex(/^[^/\\]/, 'must be a path inside the archive'),
  fileMode: fileModeSchema,
  overwrite: z.enum(OVERWRITE_POLICIES),
  timeoutSeconds: z.number().int().min(1).max(MAX_INSTALL_TIMEOUT_SECONDS),
  maxAttempts: z.number().int().min(1).max(100),
  retryDelaySeconds: z.number().int().min(0).max(30 * 24 * 3600),
  /** When devices start being released; absent: now. */
  startAt: isoTime,
  /** Validity counted from the start; @default one week. */
  validForSeconds: z.number().int().min(60).max(MAX_VALIDITY_SECONDS),
  /** Or the end of the validity as a time. */
  validUntil: isoTime,
  devicesPerMinute: z.number().int().min(1).max(MAX_DEVICES_PER_MINUTE),
  deferWhileVpn: z.boolean(),
  reboot: rebootSchema,
  /** respect: devices install (and reboot) only inside one of their maintenance windows long enough for the timeout, and download at any time; ignore: at any time. @default respect for install and uninstall, ignore for distribute-files */
  maintenanceWindows: z.enum(WINDOW_POLICIES)
}

export const createTaskSchema = z.object({
  packageId: z.string().regex(/^[0-9a-f]{64}$/, 'must be a package id'),
  action: z.enum(ACTIONS),
  targets: taskSettings.targets,
  name: taskSettings.name.optional(),
  runArgs: taskSettings.runArgs.optional(),
  bandwidthKBps: taskSettings.bandwidthKBps.optional(),
  destination: taskSettings.destination.optional(),
  entry: taskSettings.entry.optional(),
  fileMode: taskSettings.fileMode.optional(),
  overwrite: taskSettings.overwrite.optional(),
  timeoutSeconds: taskSettings.timeoutSeconds.optional(),
  maxAttempts: taskSettings.maxAttempts.optional(),
  retryDelaySeconds: taskSettings.retryDelaySeconds.optional(),
  startAt: taskSettings.startAt.optional(),
  validForSeconds: taskSettings.validForSeconds.optional(),
  validUntil: taskSettings.validUntil.optional(),
  devicesPerMinute: taskSettings.devicesPerMinute.optional(),
  deferWhileVpn: taskSettings.deferWhileVpn.optional(),
  reboot: taskSettings.reboot.optional(),
  maintenanceWindows: taskSettings.maintenanceWindows.optional(),
  /** A phased rollout: at least two ordered rings (groups or a percent of the targets; the last takes the rest), each with a success threshold, a minimum soak and an automatic halt on failures. */
  phases: phasesSchema.optional(),
  /** For a package that supersedes others: also target the devices that hold one of them. @default true */
  targetSuperseded: z.boolean().optional()
}).strict().refine(request => request.validForSeconds === undefined || request.validUntil === undefined, { message: 'give validForSeconds or validUntil, not both', path: ['validUntil'] })

export type CreateTaskRequest = z.infer<typeof createTaskSchema>

/** An edit: fields present replace the task's; `null` removes an optional limit. */
export const editTaskSchema = z.object({
  targets: taskSettings.targets.optional(),
  name: taskSettings.name.optional(),
  runArgs: taskSettings.runArgs.optional(),
  bandwidthKBps: taskSettings.bandwidthKBps.nullable().optional(),
  destination: taskSettings.destination.optional(),
  entry: taskSettings.entry.optional(),
  fileMode: taskSettings.fileMode.nullable().optional(),
  overwrite: taskSettings.overwrite.optional(),
  timeoutSeconds: taskSettings.timeoutSeconds.optional(),
  maxAttempts: taskSettings.maxAttempts.optional(),
  retryDelaySeconds: taskSettings.retryDelaySeconds.optional(),
  startAt: taskSettings.startAt.optional(),
  validForSeconds: taskSettings.validForSeconds.optional(),
  validUntil: taskSettings.validUntil.optional(),
  devicesPerMinute: taskSettings.devicesPerMinute.nullable().optional(),
  deferWhileVpn: taskSettings.deferWhileVpn.optional(),
  reboot: taskSettings.reboot.optional(),
  maintenanceWindows: taskSettings.maintenanceWindows.optional()
}).strict()
  .refine(edit => Object.keys(edit).length > 0, { message: 'name at least one setting to change' })
  .refine(edit => edit.validForSeconds === undefined || edit.validUntil === undefined, { message: 'give validForSeconds or validUntil, not both', path: ['validUntil'] })

export type EditTaskRequest = z.infer<typeof editTaskSchema>

