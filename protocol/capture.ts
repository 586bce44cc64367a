import { posix } from 'node:path'
import { z } from 'zod'
import { SHA256_HEX } from './encoding.js'
import { MeshdeployError } from './errors.js'
import { ARCHITECTURES } from './manifest.js'

/**
 * A capture package is what changed on a reference machine between two
 * snapshots, packed to be replayed on other devices (the Kaseya Packager's
 * idea). It is a gzip-compressed tar archive whose entries come in a fixed
 * order, so that a reader can act on each before the next arrives:
 *
 *   meshdeploy-capture.json   the header: source OS, distribution, architecture, roots, counts
 *   changes.jsonl             one change per line, parents before children
 *   packages.jsonl            the system packages the change needs, one per line
 *   files/<path>              the content of every added or changed file, in the order of the changes
 *
 * The header comes first and is small, so the coordinator tells a capture
 * package and its platform from the first bytes of an upload.
 */
export const CAPTURE_FORMAT = 'meshdeploy.capture'
export const CAPTURE_FORMAT_VERSION = 1
export const CAPTURE_HEADER_ENTRY = 'meshdeploy-capture.json'
export const CAPTURE_CHANGES_ENTRY = 'changes.jsonl'
export const CAPTURE_PACKAGES_ENTRY = 'packages.jsonl'
export const CAPTURE_FILES_PREFIX = 'files/'
/** The header is read whole; it carries no lists. */
export const MAX_CAPTURE_HEADER_BYTES = 64 * 1024
/** One line of changes.jsonl or packages.jsonl. */
export const MAX_CAPTURE_LINE_BYTES = 16 * 1024
export const MAX_CAPTURE_CHANGES = 1_000_000
export const MAX_CAPTURE_REQUIRED_PACKAGES = 10_000

/** A capture package that does not follow the format; nothing of it is applied. */
export class MalformedCaptureError extends MeshdeployError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'malformed-capture', options)
    this.name = 'MalformedCaptureError'
  }
}

/** A path of a capture package that leaves the captured roots (or the install root). */
export class CapturePathError extends MeshdeployError {
  readonly path: string
  constructor (path: string, problem: string) {
    super(`capture path ${JSON.stringify(path)} ${problem}`, 'path-escape')
    this.name = 'CapturePathError'
    this.path = path
  }
}

const sha256Hex = z.string().regex(SHA256_HEX, 'must be a lowercase hex SHA-256')
const label = z.string().max(200)

/** The machine a capture was taken on. */
export const captureSourceSchema = z.object({
  os: z.enum(['linux', 'windows', 'macos']),
  /** os-release ID: debian, ubuntu, rhel, fedora, … */
  distribution: label,
  /** The family whose packages and layout the distribution shares: debian, rhel, suse, arch, alpine, or the ID itself. */
  family: label,
  /** os-release VERSION_ID. */
  distributionVersion: label,
  arch: z.enum(ARCHITECTURES),
  /** dpkg, rpm, or none: which list of system packages was compared. */
  packageManager: z.enum(['dpkg', 'rpm', 'none']),
  hostname: label.optional(),
  kernel: label.optional()
}).strict()

export type CaptureSource = z.infer<typeof captureSourceSchema>

export const captureCountsSchema = z.object({
  added: z.number().int().min(0),
  modified: z.number().int().min(0),
  removed: z.number().int().min(0),
  /** Mode or owner changed, content not. */
  metadata: z.number().int().min(0),
  /** Bytes of file content in the package. */
  contentBytes: z.number().int().min(0),
  requiredPackages: z.number().int().min(0)
}).strict()

export type CaptureCounts = z.infer<typeof captureCountsSchema>

export const captureHeaderSchema = z.object({
  format: z.literal(CAPTURE_FORMAT),
  formatVersion: z.literal(CAPTURE_FORMAT_VERSION),
  name: label.min(1),
  version: label.min(1),
  createdAt: z.iso.datetime({ offset: true }),
  source: captureSourceSchema,
  /** Absolute folders the capture covered; every change lies under one of them. */
  roots: z.array(z.string().min(1).max(1024)).min(1).max(64),
  counts: captureCountsSchema
}).strict()

export type CaptureHeader = z.infer<typeof captureHeaderSchema>

export const CHANGE_OPERATIONS = ['add', 'modify', 'remove', 'metadata'] as const
export const ENTRY_TYPES = ['file', 'dir', 'symlink'] as const
export type ChangeOperation = typeof CHANGE_OPERATIONS[number]
export type EntryType = typeof ENTRY_TYPES[number]

/** One line of changes.jsonl. A removal carries the path (and type) only. */
export const captureChangeSchema = z.object({
  op: z.enum(CHANGE_OPERATIONS),
  path: z.string().min(1).max(4096),
  type: z.enum(ENTRY_TYPES),
  /** Permission bits, setuid/setgid/sticky included. */
  mode: z.number().int().min(0).max(0o7777).optional(),
  uid: z.number().int().min(0).max(2 ** 32 - 1).optional(),
  gid: z.number().int().min(0).max(2 ** 32 - 1).optional(),
  /** Owner names, preferred over the ids on a device where they differ. */
  user: z.string().max(64).optional(),
  group: z.string().max(64).optional(),
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  sha256: sha256Hex.optional(),
  /** The content the reference machine had before (modify): tells a device whose copy differed. */
  previousSha256: sha256Hex.optional(),
  /** Symbolic link target, verbatim. */
  target: z.string().min(1).max(4096).optional(),
  mtimeMs: z.number().min(0).optional()
}).strict().superRefine((change, context) => {
  if (change.op === 'remove') return
  if (change.mode === undefined || change.uid === undefined || change.gid === undefined) context.addIssue({ code: 'custom', message: `${change.op} ${change.path} needs mode, uid and gid` })
  const writesContent = change.op === 'add' || change.op === 'modify'
  if (writesContent && change.type === 'file' && (change.sha256 === undefined || change.size === undefined)) context.addIssue({ code: 'custom', message: `${change.op} of file ${change.path} needs sha256 and size` })
  if (writesContent && change.type === 'symlink' && change.target === undefined) context.addIssue({ code: 'custom', message: `${change.op} of link ${change.path} needs a target` })
})

export type CaptureChange = z.infer<typeof captureChangeSchema>

/** A system package the captured change needs (installed or upgraded between the snapshots). */
export const requiredPackageSchema = z.object({
  manager: z.enum(['dpkg', 'rpm']),
  name: z.string().min(1).max(200).regex(/^[A-Za-z0-9][A-Za-z0-9+._:~-]*$/, 'must be a package name'),
  version: z.string().min(1).max(200),
  arch: z.string().max(50).optional()
}).strict()

export type RequiredPackage = z.infer<typeof requiredPackageSchema>

/** Whether a change writes file content that the archive carries under files/. */
export function carriesContent (change: Pick<CaptureChange, 'op' | 'type'>): boolean {
  return change.type === 'file' && (change.op === 'add' || change.op === 'modify')
}

/** The archive entry holding a changed file's content. */
export function contentEntryOf (path: string): string {
  return CAPTURE_FILES_PREFIX + path.slice(1)
}

/**
 * Why a path of a capture package is not acceptable, or undefined: it must
 * be absolute, normalised (no `.`, `..`, empty parts or trailing slash), free
 * of NUL, and lie under one of the captured roots (never be the root itself).
 */
export function capturePathProblem (path: string, roots: readonly string[]): string | undefined {
  if (!path.startsWith('/')) return 'is not absolute'
  if (path.includes('\0')) return 'contains NUL'
  if (path !== '/' && (posix.normalize(path) !== path || path.endsWith('/'))) return 'is not normalised (. or .. or // or a trailing slash)'
  if (path.split('/').includes('..')) return 'climbs with ..'
  if (!roots.some(root => isUnder(path, root))) return `is outside the captured roots (${roots.join(', ')})`
  return undefined
}

/** Whether `path` lies strictly under `root` (both absolute, normalised). */
export function isUnder (path: string, root: string): boolean {
  if (root === '/') return path !== '/'
  return path.startsWith(root + '/')
}

/** Checks the roots a header declares: absolute, normalised, no `..`. */
export function checkCaptureRoots (roots: readonly string[]): void {
  for (const root of roots) {
    if (!root.startsWith('/') || root.includes('\0') || posix.normalize(root) !== root || (root !== '/' && root.endsWith('/'))) {
      throw new CapturePathError(root, 'is not an absolute, normalised root folder')
    }
  }
}

/**
 * Orders paths as a depth-first walk with sorted names visits them: a folder
 * right before its contents. Snapshots are written and compared in this order.
 */
export function comparePaths (a: string, b: string): number {
  if (a === b) return 0
  const left = a.split('/')
  const right = b.split('/')
  const length = Math.min(left.length, right.length)
  for (let index = 0; index < length; index++) {
    if (left[index] === right[index]) continue
    return left[index] < right[index] ? -1 : 1
  }
  return left.length - right.length
}

/** What operators review before distributing a capture package. */
export interface CaptureSummary {
  source: CaptureSource
  roots: string[]
  counts: CaptureCounts
  /** Folders two levels below the filesystem root (or a root's own level), with what changes in them, most first. */
  topFolders: Array<{ folder: string, changes: number, bytes: number }>
  /** The first removals, in order; `removalsTotal` says how many there are. */
  removals: string[]
  removalsTotal: number
  requiredPackages: RequiredPackage[]
  requiredPackagesTotal: number
}

export const SUMMARY_TOP_FOLDERS = 12
export const SUMMARY_REMOVALS = 50
export const SUMMARY_REQUIRED_PACKAGES = 50
/** Folders tracked for the top list; a capture touching more folders counts the rest as "other". */
const MAX_TRACKED_FOLDERS = 10_000

/** The folder a change is grouped under: the first two levels, or the root it belongs to when that is deeper. */
export function topFolderOf (path: string, roots: readonly string[]): string {
  const parts = path.split('/')
  let folder = parts.length > 3 ? parts.slice(0, 3).join('/') : posix.dirname(path)
  for (const root of roots) if (isUnder(path, root) && root.length > folder.length) folder = root
  return folder
}

/** Builds a summary from a capture's header and changes, one change at a time, in bounded memory. */
export class CaptureSummaryBuilder {
  private readonly folders = new Map<string, { changes: number, bytes: number }>()
  private readonly removals: string[] = []
  private removalsTotal = 0
  private readonly required: RequiredPackage[] = []
  private requiredTotal = 0

  constructor (private readonly header: CaptureHeader) {}

  addChange (change: CaptureChange): void {
    if (change.op === 'remove') {
      this.removalsTotal++
      if (this.removals.length < SUMMARY_REMOVALS) this.removals.push(change.path)
    }
    const folder = topFolderOf(change.path, this.header.roots)
    const key = this.folders.has(folder) || this.folders.size < MAX_TRACKED_FOLDERS ? folder : '(other)'
    const entry = this.folders.get(key) ?? { changes: 0, bytes: 0 }
    entry.changes++
    if (carriesContent(change)) entry.bytes += change.size ?? 0
    this.folders.set(key, entry)
  }

  addRequiredPackage (pkg: RequiredPackage): void {
    this.requiredTotal++
    if (this.required.length < SUMMARY_REQUIRED_PACKAGES) this.required.push(pkg)
  }

  summary (): CaptureSummary {
    const topFolders = [...this.folders.entries()]
      .map(([folder, { changes, bytes }]) => ({ folder, changes, bytes }))
      .sort((a, b) => b.changes - a.changes || b.bytes - a.bytes || comparePaths(a.folder, b.folder))
      .slice(0, SUMMARY_TOP_FOLDERS)
    return {
      source: this.header.source,
      roots: this.header.roots,
      counts: this.header.counts,
      topFolders,
      removals: [...this.removals],
      removalsTotal: this.removalsTotal,
      requiredPackages: [...this.required],
      requiredPackagesTotal: this.requiredTotal
    }
  }
}
