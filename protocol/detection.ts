import { z } from 'zod'
import { MAX_NAME_CHARS } from './limits.js'
import { SHA256_HEX } from './encoding.js'
import type { Platform } from './manifest.js'
import { label as labelText } from './text.js'

/**
 * Detection rules say whether the software is installed. The agent checks
 * the rule before an install (already installed: nothing to do) and after it
 * (the install succeeded only if the rule now holds); an uninstall succeeds
 * only if the rule no longer holds. Without a rule the install state cannot
 * be determined and the result says so.
 */
const absolutePath = z.string().min(1).max(1024).regex(/^\//, 'must be an absolute path')
const label = labelText(z.string().trim().min(1).max(MAX_NAME_CHARS))
const version = z.string().trim().min(1).max(100)

/** A file exists, optionally with a given SHA-256. */
export const fileDetectionSchema = z.object({
  type: z.literal('file'),
  /** Absolute path, resolved under the agent's install root. */
  path: absolutePath,
  sha256: z.string().regex(SHA256_HEX).optional()
}).strict()

/** A command exits 0. */
export const commandDetectionSchema = z.object({
  type: z.literal('command'),
  /** Program and arguments, run without a shell; installed when it exits 0. */
  command: z.array(z.string().min(1).max(4096)).min(1).max(64),
  timeoutSeconds: z.number().int().min(1).max(600).optional()
}).strict()

/** Windows: an entry of the registry's Uninstall keys with this product name (and publisher). */
export const registryDetectionSchema = z.object({
  type: z.literal('windows-registry'),
  /** The product's full name (DisplayName), compared without regard to case. */
  displayName: label,
  /** The publisher (Publisher), compared without regard to case. */
  publisher: label.optional(),
  /** DisplayVersion, exact. */
  version: version.optional()
}).strict()

/** macOS: a package receipt (pkgutil) or an app bundle's Info.plist with this bundle id. */
export const bundleDetectionSchema = z.object({
  type: z.literal('macos-bundle'),
  bundleId: z.string().min(1).max(255).regex(/^[A-Za-z0-9][A-Za-z0-9.-]*$/, 'must be a bundle or package id such as com.example.app'),
  /** An app bundle (e.g. /Applications/Tool.app) whose Info.plist must name the bundle id; without it the pkgutil receipt is checked. */
  appPath: absolutePath.optional(),
  /** CFBundleShortVersionString of the app, or the receipt's version; exact. */
  version: version.optional()
}).strict()

export const LINUX_PACKAGE_MANAGERS = ['dpkg', 'rpm'] as const
export type LinuxPackageManager = typeof LINUX_PACKAGE_MANAGERS[number]
export const linuxPackageName = z.string().min(1).max(255).regex(/^[A-Za-z0-9][A-Za-z0-9+._-]*$/, 'must be a package name')

/** Linux: a package installed according to dpkg-query or rpm -q, optionally at an exact version. */
export const linuxPackageDetectionSchema = z.object({
  type: z.literal('linux-package'),
  manager: z.enum(LINUX_PACKAGE_MANAGERS),
  name: linuxPackageName,
  version: version.optional()
}).strict()

export const detectionRuleSchema = z.discriminatedUnion('type', [
  fileDetectionSchema,
  commandDetectionSchema,
  registryDetectionSchema,
  bundleDetectionSchema,
  linuxPackageDetectionSchema
])

export type DetectionRule = z.infer<typeof detectionRuleSchema>
export type DetectionRuleType = DetectionRule['type']

/** The platform a rule can be evaluated on; `any` for the portable ones. */
export function platformOfRule (rule: { type: string }): Platform {
  switch (rule.type) {
    case 'windows-registry': return 'windows'
    case 'macos-bundle': return 'macos'
    case 'linux-package': return 'linux'
    default: return 'any'
  }
}

export const nameSchema = labelText(z.string().trim().min(1).max(MAX_NAME_CHARS))
