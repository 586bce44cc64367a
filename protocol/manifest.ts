import { z } from 'zod'
import { openEnvelope, sealEnvelope, type KeyResolver, type SignedEnvelope, type SigningKey } from './envelope.js'
import { ExpiredError, MalformedError, NotYetValidError, UnsupportedVersionError } from './errors.js'
import { fromUtf8, SHA256_HEX, utf8 } from './encoding.js'
import { detectionRuleSchema } from './detection.js'
import { exitCodeMapSchema } from './exit-codes.js'
import { manifestPublisherSignatureSchema } from './publisher-signature.js'
import { uninstallSpecSchema, uninstallNeedsContent } from './uninstall.js'
import {
  DEFAULT_CLOCK_SKEW_MS, MAX_CLOCK_SKEW_MS, MAX_CHUNK_SIZE_BYTES, MAX_CHUNKS_PER_PACKAGE, MAX_INSTALL_TIMEOUT_SECONDS,
  MAX_MANIFEST_BYTES, MAX_RUN_ARGS, MIN_CHUNK_SIZE_BYTES
} from './limits.js'
import { packageIdOf } from './package-id.js'
import { WINDOW_POLICIES } from './maintenance-window.js'

export const MANIFEST_DOMAIN = 'meshdeploy/manifest/v1'
/** The document format inside the envelope; an agent refuses a version it does not know. */
export const MANIFEST_VERSION = 2

export const PLATFORMS = ['linux', 'windows', 'macos', 'any'] as const
export const ARCHITECTURES = ['x64', 'arm64', 'any'] as const
export const PACKAGE_KINDS = ['msi', 'exe', 'bat', 'ps1', 'pkg', 'deb', 'rpm', 'shell', 'tar', 'tar.gz', 'zip', 'file', 'capture'] as const
export const ACTIONS = ['install', 'uninstall', 'distribute-files'] as const
export const REBOOT_POLICIES = ['never', 'always', 'prompt'] as const
export const OVERWRITE_POLICIES = ['replace', 'keep', 'fail'] as const
/** How a new package takes the place of one it supersedes: installed over it, or after the old one is removed. */
export const SUPERSEDE_MODES = ['upgrade', 'replace'] as const
/** Dependencies (the whole chain) and superseded packages one manifest may carry. */
export const MAX_MANIFEST_DEPENDENCIES = 32
export const MAX_MANIFEST_SUPERSEDED = 32

export type Platform = typeof PLATFORMS[number]
export type Architecture = typeof ARCHITECTURES[number]
export type PackageKind = typeof PACKAGE_KINDS[number]
export type Action = typeof ACTIONS[number]
export type RebootPolicy = typeof REBOOT_POLICIES[number]
export type OverwritePolicy = typeof OVERWRITE_POLICIES[number]
export type SupersedeMode = typeof SUPERSEDE_MODES[number]

/** File modes as operators write them: `644`, `0640`, `0755`. */
export const fileModeSchema = z.string().regex(/^0?[0-7]{3}$/, 'must be an octal file mode such as 0644')

const isoTime = z.iso.datetime({ offset: true })
const sha256Hex = z.string().regex(SHA256_HEX, 'must be a lowercase hex SHA-256')

export const manifestPackageSchema = z.object({
  id: sha256Hex,
  name: z.string().min(1).max(200),
  version: z.string().min(1).max(100),
  platform: z.enum(PLATFORMS),
  arch: z.enum(ARCHITECTURES),
  kind: z.enum(PACKAGE_KINDS),
  fileName: z.string().min(1).max(255),
  sizeBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  sha256: sha256Hex,
  chunkSizeBytes: z.number().int().min(MIN_CHUNK_SIZE_BYTES).max(MAX_CHUNK_SIZE_BYTES),
  chunks: z.array(sha256Hex).max(MAX_CHUNKS_PER_PACKAGE),
  /** The publisher's signature over `sha256`; the agent verifies it before installing. */
  publisherSignature: manifestPublisherSignatureSchema.optional()
}).strict()

export const installSpecSchema = z.object({
  /** Arguments passed to the installer (or uninstaller), without a shell. */
  runArgs: z.array(z.string().max(4096)).max(MAX_RUN_ARGS),
  timeoutSeconds: z.number().int().min(1).max(MAX_INSTALL_TIMEOUT_SECONDS),
  /** Script inside an archive to run after extraction (archives installed, not distributed). */
  entry: z.string().min(1).max(255).optional(),
  /** Folder that distributed files are extracted or copied into, resolved under the install root. */
  destination: z.string().min(1).max(1024).regex(/^\//, 'must be an absolute path').optional(),
  /** Distributed files: mode of the copied file, or of every extracted file. */
  fileMode: fileModeSchema.optional(),
  /** Distributed files: what to do with a file that is already there. @default 'replace' */
  overwrite: z.enum(OVERWRITE_POLICIES).optional(),
  detection: detectionRuleSchema.optional(),
  /** The package's exit-code mapping; overrides the defaults. */
  exitCodes: exitCodeMapSchema.optional(),
  /** How to remove the software (the uninstall action). */
  uninstall: uninstallSpecSchema.optional()
}).strict()

export const rebootSchema = z.object({
  /** never: report a pending reboot when one is needed; always: reboot after the install; prompt: tell the user and force the reboot at the deadline. */
  policy: z.enum(REBOOT_POLICIES),
  /** Shown to the user (prompt, always). */
  message: z.string().max(500).optional(),
  /** prompt: seconds the user has before the reboot is forced. */
  deadlineSeconds: z.number().int().min(0).max(7 * 24 * 3600).optional(),
  /** Close applications that block the session instead of waiting for them. */
  forceCloseApps: z.boolean().optional()
}).strict()

export const conditionsSchema = z.object({
  /** Wait while a VPN interface is up (the device shows deferred-vpn). */
  deferWhileVpn: z.boolean(),
  /**
   * respect: the install (and a reboot) starts only inside one of the
   * device's maintenance windows that stays open for the install's timeout;
   * content downloads at any time. ignore, or absent: at any time.
   */
  maintenanceWindows: z.enum(WINDOW_POLICIES).optional()
}).strict()

/** A package installed before the task's own, when its detection rule says it is missing. */
export const manifestDependencySchema = z.object({
  package: manifestPackageSchema,
  /** How to install it; its detection rule is required (it decides whether the dependency is missing). */
  install: installSpecSchema
}).strict().refine(dependency => dependency.install.detection !== undefined, { message: 'a dependency needs a detection rule', path: ['install', 'detection'] })

/** An older package the task's package takes the place of. */
export const manifestSupersededSchema = z.object({
  mode: z.enum(SUPERSEDE_MODES),
  package: z.object({ id: sha256Hex, name: z.string().min(1).max(200), version: z.string().min(1).max(100) }).strict(),
  /** Whether the older package is installed. */
  detection: detectionRuleSchema,
  /** replace: how to remove it before the new one is installed. */
  uninstall: uninstallSpecSchema.optional(),
  /** replace, when removing it needs its content (what distributing it put in a folder). */
  content: manifestPackageSchema.optional(),
  /** Bound on the uninstaller's run time. */
  timeoutSeconds: z.number().int().min(1).max(MAX_INSTALL_TIMEOUT_SECONDS).optional(),
  exitCodes: exitCodeMapSchema.optional()
}).strict().superRefine((superseded, context) => {
  if (superseded.mode === 'replace' && superseded.uninstall === undefined) {
    context.addIssue({ code: 'custom', path: ['uninstall'], message: 'replacing a package needs its uninstall spec' })
  }
  if (superseded.uninstall !== undefined && uninstallNeedsContent(superseded.uninstall) && superseded.content === undefined) {
    context.addIssue({ code: 'custom', path: ['content'], message: 'this uninstall spec needs the package\'s content' })
  }
})

export const manifestLimitsSchema = z.object({
  /** Cap on the device's total download rate across every source, KB/s (1 KB = 1024 bytes); absent: none. */
  bandwidthKBps: z.number().int().min(1).max(10_000_000).optional(),
  maxAttempts: z.number().int().min(1).max(100),
  retryDelaySeconds: z.number().int().min(0).max(30 * 24 * 3600)
}).strict()

export const manifestSchema = z.object({
  type: z.literal('meshdeploy.manifest'),
  version: z.literal(MANIFEST_VERSION),
  taskId: z.string().min(1).max(100),
  /** Grows with every edit of the task; agents refuse a lower one. */
  revision: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  /** Grows with every re-run for failed devices: a device that failed starts counting its attempts again. */
  rerun: z.number().int().min(0).max(1_000_000),
  issuedAt: isoTime,
  expiresAt: isoTime,
  action: z.enum(ACTIONS),
  package: manifestPackageSchema,
  install: installSpecSchema,
  reboot: rebootSchema,
  conditions: conditionsSchema,
  limits: manifestLimitsSchema,
  /** Installed first, in this order, where missing (the whole chain: a dependency's dependencies come before it). */
  dependencies: z.array(manifestDependencySchema).max(MAX_MANIFEST_DEPENDENCIES).optional(),
  /** Older packages this one supersedes: an install upgrades or replaces them where they are detected. */
  supersedes: z.array(manifestSupersededSchema).max(MAX_MANIFEST_SUPERSEDED).optional()
}).strict().superRefine((manifest, context) => {
  if (manifest.action === 'uninstall' && manifest.install.uninstall === undefined) {
    context.addIssue({ code: 'custom', path: ['install', 'uninstall'], message: 'an uninstall needs an uninstall spec' })
  }
  if (manifest.action === 'distribute-files' && manifest.install.destination === undefined) {
    context.addIssue({ code: 'custom', path: ['install', 'destination'], message: 'distributing files needs a destination' })
  }
  const checkChunks = (pkg: ManifestPackage, path: Array<string | number>): void => {
    const expected = Math.ceil(pkg.sizeBytes / pkg.chunkSizeBytes)
    if (pkg.chunks.length !== expected) context.addIssue({ code: 'custom', path: [...path, 'chunks'], message: `expected ${expected} chunks for ${pkg.sizeBytes} bytes` })
  }
  checkChunks(manifest.package, ['package'])
  manifest.dependencies?.forEach((dependency, index) => { checkChunks(dependency.package, ['dependencies', index, 'package']) })
  manifest.supersedes?.forEach((superseded, index) => { if (superseded.content !== undefined) checkChunks(superseded.content, ['supersedes', index, 'content']) })
  if ((manifest.dependencies?.length ?? 0) > 0 && manifest.action !== 'install') {
    context.addIssue({ code: 'custom', path: ['dependencies'], message: 'only an install brings dependencies' })
  }
  if (Date.parse(manifest.expiresAt) <= Date.parse(manifest.issuedAt)) {
    context.addIssue({ code: 'custom', path: ['expiresAt'], message: 'must be later than issuedAt' })
  }
})

export type Manifest = z.infer<typeof manifestSchema>
export type ManifestPackage = z.infer<typeof manifestPackageSchema>
export type InstallSpec = z.infer<typeof installSpecSchema>
export type RebootSpec = z.infer<typeof rebootSchema>
export type ManifestDependency = z.infer<typeof manifestDependencySchema>
export type ManifestSuperseded = z.infer<typeof manifestSupersededSchema>

/** Whether the device needs the package's content for this manifest. */
export function needsContent (manifest: Pick<Manifest, 'action' | 'install'>): boolean {
  if (manifest.action !== 'uninstall') return true
  return manifest.install.uninstall !== undefined && uninstallNeedsContent(manifest.install.uninstall)
}

/** The canonical bytes of a manifest: what is signed and what travels. */
export function encodeManifest (manifest: Manifest): Uint8Array {
  return utf8(JSON.stringify(manifest))
}

export function signManifest (manifest: Manifest, key: SigningKey): SignedEnvelope {
  const checked = validateManifest(manifest)
  return sealEnvelope(MANIFEST_DOMAIN, encodeManifest(checked), key)
}

/** Every package whose content a manifest has its device download: its own, its dependencies', and superseded packages removed from their content. */
export function contentPackagesOf (manifest: Pick<Manifest, 'package' | 'dependencies' | 'supersedes'>): ManifestPackage[] {
  return [manifest.package, ...(manifest.dependencies ?? []).map(dependency => dependency.package), ...(manifest.supersedes ?? []).flatMap(superseded => superseded.content ?? [])]
}

/** Validates a decoded manifest object; throws MalformedError with the schema's reasons. */
export function validateManifest (candidate: unknown): Manifest {
  const version = (candidate as { version?: unknown } | null)?.version
  if (typeof version === 'number' && version !== MANIFEST_VERSION) throw new UnsupportedVersionError('manifest', version, MANIFEST_VERSION)
  const parsed = manifestSchema.safeParse(candidate)
  if (!parsed.success) throw new MalformedError(`manifest: ${z.prettifyError(parsed.error)}`)
  const manifest = parsed.data
  for (const pkg of contentPackagesOf(manifest)) {
    const id = packageIdOf(pkg)
    if (id !== pkg.id) throw new MalformedError(`manifest: the chunk list hashes to ${id}, not to the package id ${pkg.id}`)
  }
  return manifest
}

export interface OpenManifestOptions {
  keys: KeyResolver
  /** Current time in ms; @default Date.now() */
  now?: number
  /** Tolerated clock difference, bounded by MAX_CLOCK_SKEW_MS; @default DEFAULT_CLOCK_SKEW_MS */
  clockSkewMs?: number
}

export interface OpenedManifest {
  manifest: Manifest
  keyId: string
}

/**
 * Decodes a manifest envelope, verifies its signature over the exact bytes
 * received, validates the document and checks its validity window. Throws a
 * named error: MalformedError, TooLargeError, WrongDomainError,
 * UnknownKeyError, BadSignatureError, ExpiredError or NotYetValidError.
 */
export function openManifest (envelope: unknown, options: OpenManifestOptions): OpenedManifest {
  const opened = openEnvelope(envelope, { domain: MANIFEST_DOMAIN, keys: options.keys, maxPayloadBytes: MAX_MANIFEST_BYTES })
  let decoded: unknown
  try {
    decoded = JSON.parse(fromUtf8(opened.payload))
  } catch (error) {
    throw new MalformedError('manifest payload is not UTF-8 JSON', { cause: error })
  }
  const manifest = validateManifest(decoded)
  const now = options.now ?? Date.now()
  const skew = Math.min(Math.max(0, options.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS), MAX_CLOCK_SKEW_MS)
  if (Date.parse(manifest.expiresAt) + skew < now) throw new ExpiredError(manifest.expiresAt)
  if (Date.parse(manifest.issuedAt) - skew > now) throw new NotYetValidError(manifest.issuedAt)
  return { manifest, keyId: opened.keyId }
}
