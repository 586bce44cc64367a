import { z } from 'zod'
import { MAX_NAME_CHARS } from './limits.js'
import { LINUX_PACKAGE_MANAGERS, linuxPackageName } from './detection.js'
import type { Platform } from './manifest.js'

const absolutePath = z.string().min(1).max(1024).regex(/^\//, 'must be an absolute path')

/** Windows Installer: `msiexec /x {product code} /qn /norestart`. */
export const msiUninstallSchema = z.object({
  type: z.literal('msi'),
  productCode: z.string().regex(/^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$/, 'must be an MSI product code such as {23170F69-40C1-2702-2201-000001000000}')
}).strict()

/** Windows: the QuietUninstallString of the Uninstall key whose DisplayName (and Publisher) match. */
export const registryUninstallSchema = z.object({
  type: z.literal('windows-registry'),
  displayName: z.string().trim().min(1).max(MAX_NAME_CHARS),
  publisher: z.string().trim().min(1).max(MAX_NAME_CHARS).optional()
}).strict()

/** macOS: the files of a package receipt are removed, then `pkgutil --forget`. */
export const pkgutilUninstallSchema = z.object({
  type: z.literal('macos-pkgutil'),
  packageId: z.string().min(1).max(255).regex(/^[A-Za-z0-9][A-Za-z0-9.-]*$/, 'must be a package id such as com.example.tool')
}).strict()

/** Linux: `dpkg -r` (or `-P` with purge) or `rpm -e`. */
export const linuxPackageUninstallSchema = z.object({
  type: z.literal('linux-package'),
  manager: z.enum(LINUX_PACKAGE_MANAGERS),
  name: linuxPackageName,
  /** dpkg only: remove configuration files too. */
  purge: z.boolean().optional()
}).strict()

/** A command, run without a shell; exit codes are mapped as for installers. */
export const commandUninstallSchema = z.object({
  type: z.literal('command'),
  command: z.array(z.string().min(1).max(4096)).min(1).max(64)
}).strict()

/** Files or folders to remove, resolved under the install root. */
export const filesUninstallSchema = z.object({
  type: z.literal('files'),
  paths: z.array(absolutePath.refine(path => path.replace(/\/+$/, '') !== '', 'may not be the root folder')).min(1).max(1000)
}).strict()

/** What the package put into a folder when it was distributed: needs the package content to know its entries. */
export const distributedFilesUninstallSchema = z.object({
  type: z.literal('distributed-files'),
  destination: absolutePath
}).strict()

/** A capture package: the agent applies the undo journal it wrote when it installed the package. */
export const captureUninstallSchema = z.object({
  type: z.literal('capture')
}).strict()

export const uninstallSpecSchema = z.discriminatedUnion('type', [
  msiUninstallSchema,
  registryUninstallSchema,
  pkgutilUninstallSchema,
  linuxPackageUninstallSchema,
  commandUninstallSchema,
  filesUninstallSchema,
  distributedFilesUninstallSchema,
  captureUninstallSchema
])

export type UninstallSpec = z.infer<typeof uninstallSpecSchema>

/** Whether an uninstall needs the package's content on the device. */
export function uninstallNeedsContent (spec: UninstallSpec): boolean {
  return spec.type === 'distributed-files'
}

/** The platform an uninstall spec can run on; `any` for the portable ones. */
export function platformOfUninstall (spec: UninstallSpec): Platform {
  switch (spec.type) {
    case 'msi':
    case 'windows-registry': return 'windows'
    case 'macos-pkgutil': return 'macos'
    case 'linux-package': return 'linux'
    default: return 'any'
  }
}
