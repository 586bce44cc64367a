import { z } from 'zod'
import { MAX_TARGET_ENTRIES } from '../../protocol/index.js'
import type { DeviceRecord, TaskTargets, UserRecord } from '../store/types.js'
import { inDepartment } from '../directory/service.js'

const names = z.array(z.string().trim().min(1).max(253)).max(MAX_TARGET_ENTRIES)

export const targetsSchema = z.object({
  deviceIds: names.optional(),
  groups: names.optional(),
  sites: names.optional(),
  users: names.optional(),
  departments: names.optional(),
  roles: names.optional(),
  all: z.boolean().optional(),
  /** Devices that reported one of these packages installed (by their detection rules). A task for a superseding package adds the packages it supersedes. */
  installedPackages: z.array(z.string().regex(/^[0-9a-f]{64}$/, 'must be a package id')).max(100).optional()
}).strict().refine(
  targets => targets.all === true || ['deviceIds', 'groups', 'sites', 'users', 'departments', 'roles', 'installedPackages'].some(key => ((targets[key as keyof typeof targets] as string[] | undefined)?.length ?? 0) > 0),
  { message: 'name at least one device, group, site, user, department, role or installed package, or set all' }
)

export type TargetDevice = Pick<DeviceRecord, 'id' | 'hostname' | 'groups' | 'site' | 'status'>
export type TargetUser = Pick<UserRecord, 'id' | 'department' | 'role'>

function includesFolded (list: readonly string[] | undefined, value: string | undefined): boolean {
  if (list === undefined || value === undefined) return false
  const folded = value.toLowerCase()
  return list.some(item => item.toLowerCase() === folded)
}

/**
 * Whether a device is among a task's targets. Targets are resolved when
 * asked, so a device that joins a group, or whose user moves to a targeted
 * department, later is included. `users` are the people who use the device.
 */
export function matchesTargets (device: TargetDevice, targets: TaskTargets, users: readonly TargetUser[] = [], hasPackage: (packageId: string) => boolean = () => false): boolean {
  if (device.status !== 'active') return false
  if (targets.all === true) return true
  if (targets.installedPackages?.some(hasPackage) === true) return true
  if (targets.deviceIds?.some(id => id === device.id || id.toLowerCase() === device.hostname.toLowerCase()) === true) return true
  if (targets.sites?.includes(device.site) === true) return true
  if (targets.groups?.some(group => device.groups.includes(group)) === true) return true
  for (const user of users) {
    if (includesFolded(targets.users, user.id)) return true
    if (includesFolded(targets.roles, user.role)) return true
    if (targets.departments?.some(department => inDepartment(user.department, department)) === true) return true
  }
  return false
}
