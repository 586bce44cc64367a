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

export const MANIFEST_DOMAIN = 'meshdeploy/manifest/v1'
/** The document format inside the envelope; an agent refuses a version it does not know. */
export const MANIFEST_VERSION = 2

export const PLATFORMS = ['linux', 'windows', 'macos', 'any'] as const
export const ARCHITECTURES = ['x64', 'arm64', 'any'] as const
export const PACKAGE_KINDS = ['msi', 'exe', 'bat', 'ps1', 'pkg', 'deb', 'rpm', 'shell', 'tar', 'tar.gz', 'zip', 'file'] as const
export const ACTIONS = ['install', 'uninstall', 'distribute-files'] as const
export const REBOOT_POLICIES = ['never', 'always', 'prompt'] as const
export const OVERWRITE_POLICIES = ['replace', 'keep', 'fail'] as const

export type Platform = typeof PLATFORMS[number]
export type Architecture = typeof ARCHITECTURES[number]
export type PackageKind = typeof PACKAGE_KINDS[number]
export type Action = typeof ACTIONS[number]
export type RebootPolicy = typeof REBOOT_POLICIES[number]
export type OverwritePolicy = typeof OVERWRITE_POLICIES[number]

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
  deferWhileVpn: z.boolean()
}).strict()

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
  limits: manifestLimitsSchema
}).strict().superRefine((manifest, context) => {
  if (manifest.action === 'uninstall' && manifest.install.uninstall === undefined) {
    context.addIssue({ code: 'custom', path: ['install', 'uninstall'], message: 'an uninstall needs an uninstall spec' })
  }
  if (manifest.action === 'distribute-files' && manifest.install.destination === undefined) {
    context.addIssue({ code: 'custom', path: ['install', 'destination'], message: 'distributing files needs a destination' })
  }
  const expected = Math.ceil(manifest.package.sizeBytes / manifest.package.chunkSizeBytes)
  if (manifest.package.chunks.length !== expected) {
    context.addIssue({ code: 'custom', path: ['package', 'chunks'], message: `expected ${expected} chunks for ${manifest.package.sizeBytes} bytes` })
  }
  if (Date.parse(manifest.expiresAt) <= Date.parse(manifest.issuedAt)) {
    context.addIssue({ code: 'custom', path: ['expiresAt'], message: 'must be later than issuedAt' })
  }
})

export type Manifest = z.infer<typeof manifestSchema>
export type ManifestPackage = z.infer<typeof manifestPackageSchema>
export type InstallSpec = z.infer<typeof installSpecSchema>
export type RebootSpec = z.infer<typeof rebootSchema>

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

/** Validates a decoded manifest object; throws MalformedError with the schema's reasons. */
export function validateManifest (candidate: unknown): Manifest {
  const version = (candidate as { version?: unknown } | null)?.version
  if (typeof version === 'number' && version !== MANIFEST_VERSION) throw new UnsupportedVersionError('manifest', version, MANIFEST_VERSION)
  const parsed = manifestSchema.safeParse(candidate)
  if (!parsed.success) throw new MalformedError(`manifest: ${z.prettifyError(parsed.error)}`)
  const manifest = parsed.data
  const id = packageIdOf(manifest.package)
  if (id !== manifest.package.id) throw new MalformedError(`manifest: the chunk list hashes to ${id}, not to the package id ${manifest.package.id}`)
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
