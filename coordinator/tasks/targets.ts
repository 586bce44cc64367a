import { z } from 'zod'
import { MAX_TARGET_ENTRIES } from '../../protocol/index.js'
import type { DeviceRecord, TaskTargets } from '../store/types.js'

const names = z.array(z.string().trim().min(1).max(253)).max(MAX_TARGET_ENTRIES)

export const targetsSchema = z.object({
  deviceIds: names.optional(),
  groups: names.optional(),
  sites: names.optional(),
  all: z.boolean().optional()
}).strict().refine(
  targets => targets.all === true || (targets.deviceIds?.length ?? 0) + (targets.groups?.length ?? 0) + (targets.sites?.length ?? 0) > 0,
  { message: 'name at least one device, group or site, or set all' }
)

/** Whether a device is among a task's targets. Targets are resolved when asked, so a device that joins a group later is included. */
export function matchesTargets (device: Pick<DeviceRecord, 'id' | 'hostname' | 'groups' | 'site' | 'status'>, targets: TaskTargets): boolean {
  if (device.status !== 'active') return false
  if (targets.all === true) return true
  if (targets.deviceIds?.some(id => id === device.id || id === device.hostname) === true) return true
  if (targets.sites?.includes(device.site) === true) return true
  if (targets.groups?.some(group => device.groups.includes(group)) === true) return true
  return false
}
