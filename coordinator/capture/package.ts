import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { readFile, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'
import { Header, Pax } from 'tar'
import {
  CAPTURE_CHANGES_ENTRY, CAPTURE_FORMAT, CAPTURE_FORMAT_VERSION, CAPTURE_HEADER_ENTRY, CAPTURE_PACKAGES_ENTRY, CaptureSummaryBuilder,
  carriesContent, contentEntryOf, diffPackageLists, readCaptureArchive, requiredPackagesOf,
  type CaptureChange, type CaptureCounts, type CaptureHeader, type CaptureSummary, type PackageListDiff, type RequiredPackage
} from '../../protocol/index.js'
import { diffSnapshot, normaliseRoots, readSnapshot, writeSnapshot, type DiffItem, type SnapshotReader, type SnapshotTotals, type StateHeader } from './snapshot.js'
import { describeSource, listInstalledPackages } from './source.js'

export interface StartInit {
  statePath: string
  /** The system to capture lives under this folder ('/' for this machine). */
  rootDir: string
  roots: readonly string[]
  excludes: readonly string[]
}

/** Takes the first snapshot: the roots' entries, the source system and its installed packages. The state file itself is left out. */
export async function startCapture (init: StartInit): Promise<{ header: StateHeader, totals: SnapshotTotals }> {
  const roots = normaliseRoots(init.roots)
  const ownFiles = init.rootDir === '/' ? [init.statePath, `${init.statePath}.partial`] : []
  const excludes = [...init.excludes, ...ownFiles]
  const source = await describeSource(init.rootDir)
  const header: StateHeader = {
    format: 'meshdeploy.capture-state',
    formatVersion: 1,
    createdAt: new Date().toISOString(),
    rootDir: init.rootDir,
    roots,
    excludes,
    source,
    packages: await listInstalledPackages(source.packageManager, init.rootDir)
  }
  const totals = await writeSnapshot(init.statePath, header, { rootDir: init.rootDir, roots, excludes })
  return { header, totals }
}

/** A file changed between the diff and the moment its content was packed: the package would not be what was reviewed. */
export class ChangedWhilePackingError extends Error {
  constructor (path: string) {
    super(`${path} changed while the package was being written; close what is writing to it and run capture finish again`)
    this.name = 'ChangedWhilePackingError'
  }
}

/** Nothing changed under the roots since the snapshot: a package would do nothing. */
export class NothingCapturedError extends Error {
  constructor (roots: readonly string[]) {
    super(`nothing changed under ${roots.join(', ')} since capture start; no package was written`)
    this.name = 'NothingCapturedError'
  }
}

/** User and group names of the captured system by id. */
interface NamesById { users: Map<number, string>, groups: Map<number, string> }

async function namesById (rootDir: string): Promise<NamesById> {
  const read = async (file: string): Promise<Map<number, string>> => {
    const names = new Map<number, string>()
    const text = await readFile(join(rootDir, file), 'utf8').catch(() => '')
    for (const line of text.split('\n')) {
      const [name, , id] = line.split(':')
      if (name !== undefined && name !== '' && id !== undefined && /^\d+$/.test(id) && !names.has(Number(id))) names.set(Number(id), name)
    }
    return names
  }
  return { users: await read('etc/passwd'), groups: await read('etc/group') }
}

/** The change a difference becomes in a package. */
export function changeOf (item: DiffItem, names?: NamesById): CaptureChange {
  if (item.op === 'remove') return { op: 'remove', path: item.path, type: item.before!.type }
  const after = item.after!
  const change: CaptureChange = { op: item.op, path: item.path, type: after.type, mode: after.mode, uid: after.uid, gid: after.gid }
  const user = names?.users.get(after.uid)
  const group = names?.groups.get(after.gid)
  if (user !== undefined) change.user = user
  if (group !== undefined) change.group = group
  if (carriesContent(change)) {
    change.size = after.size
    change.sha256 = after.sha256
    change.mtimeMs = after.mtimeMs
    if (item.before?.type === 'file' && item.before.sha256 !== undefined) change.previousSha256 = item.before.sha256
  }
  if (after.type === 'symlink' && item.op !== 'metadata') change.target = after.target
  return change
}

export interface CaptureDiff {
  changes: AsyncGenerator<CaptureChange>
  packages: PackageListDiff
  required: RequiredPackage[]
}

/** The differences since `capture start`, as package changes, with the system packages added, removed and upgraded. */
export async function diffCapture (snapshot: SnapshotReader, options: { excludes?: readonly string[], concurrency?: number } = {}): Promise<CaptureDiff> {
  const { header } = snapshot
  const manager = header.source.packageManager
  const packages = diffPackageLists(header.packages, await listInstalledPackages(manager, header.rootDir))
  const required = manager === 'none' ? [] : requiredPackagesOf(packages, manager)
  const names = await namesById(header.rootDir)
  async function * changes (): AsyncGenerator<CaptureChange> {
    for await (const item of diffSnapshot(snapshot, options)) yield changeOf(item, names)
  }
  return { changes: changes(), packages, required }
}

/** The tar header blocks of a file entry (a pax header first when the name is too long for ustar). */
function entryHeader (path: string, size: number, mtimeMs = 0): Buffer[] {
  const fields = { path, mode: 0o644, uid: 0, gid: 0, size, mtime: new Date(Math.floor(mtimeMs)), type: 'File' as const }
  const header = new Header(fields)
  const needPax = header.encode()
  const blocks: Buffer[] = needPax ? [new Pax(fields).encode()] : []
  blocks.push(header.block!)
  return blocks
}

function padding (size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512)
}

async function * textEntry (path: string, text: string): AsyncGenerator<Buffer> {
  const bytes = Buffer.from(text, 'utf8')
  yield * entryHeader(path, bytes.byteLength, Date.now())
  yield bytes
  yield padding(bytes.byteLength)
}

async function * fileEntry (path: string, file: string, size: number, mtimeMs?: number): AsyncGenerator<Buffer> {
  yield * entryHeader(path, size, mtimeMs ?? Date.now())
  for await (const piece of createReadStream(file)) yield piece as Buffer
  yield padding(size)
}

/** The content of a changed file, checked against what the diff recorded as it is read. */
async function * contentEntry (change: CaptureChange, rootDir: string): AsyncGenerator<Buffer> {
  const file = join(rootDir, change.path)
  yield * entryHeader(contentEntryOf(change.path), change.size!, change.mtimeMs)
  const hash = createHash('sha256')
  let bytes = 0
  try {
    for await (const piece of createReadStream(file)) {
      bytes += (piece as Buffer).byteLength
      if (bytes > change.size!) throw new ChangedWhilePackingError(change.path)
      hash.update(piece as Buffer)
      yield piece as Buffer
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new ChangedWhilePackingError(change.path)
    throw error
  }
  if (bytes !== change.size || hash.digest('hex') !== change.sha256) throw new ChangedWhilePackingError(change.path)
  yield padding(bytes)
}

export interface FinishInit {
  statePath: string
  name: string
  version: string
  out: string
  concurrency?: number
}

export interface FinishResult {
  header: CaptureHeader
  summary: CaptureSummary
  packageBytes: number
  packages: PackageListDiff
}

/**
 * Writes a capture package from the differences since `capture start`. The
 * changes are first written to a scratch file beside the output (their
 * counts go into the header, which comes first), then the archive is
 * streamed: header, changes, required packages, and the content of every
 * added or modified file, each checked against its recorded hash as it is
 * read. The result is read back and checked whole before it takes its name.
 */
export async function finishCapture (init: FinishInit): Promise<FinishResult> {
  const snapshot = await readSnapshot(init.statePath)
  const { header: state } = snapshot
  const partial = `${init.out}.partial`
  const changesFile = `${init.out}.changes.partial`
  const own = [init.out, partial, changesFile, init.statePath].filter(path => state.rootDir === '/' && path.startsWith('/'))
  const diff = await diffCapture(snapshot, { excludes: own, ...(init.concurrency !== undefined ? { concurrency: init.concurrency } : {}) })
  const counts: CaptureCounts = { added: 0, modified: 0, removed: 0, metadata: 0, contentBytes: 0, requiredPackages: diff.required.length }
  try {
    async function * lines (): AsyncGenerator<string> {
      for await (const change of diff.changes) {
        counts[change.op === 'add' ? 'added' : change.op === 'modify' ? 'modified' : change.op === 'remove' ? 'removed' : 'metadata']++
        if (carriesContent(change)) counts.contentBytes += change.size ?? 0
        yield JSON.stringify(change) + '\n'
      }
    }
    await pipeline(Readable.from(lines()), createWriteStream(changesFile, { mode: 0o600 }))
    if (counts.added + counts.modified + counts.removed + counts.metadata === 0) throw new NothingCapturedError(state.roots)
    const header: CaptureHeader = {
      format: CAPTURE_FORMAT,
      formatVersion: CAPTURE_FORMAT_VERSION,
      name: init.name,
      version: init.version,
      createdAt: new Date().toISOString(),
      source: state.source,
      roots: state.roots,
      counts
    }
    const changesBytes = (await stat(changesFile)).size
    async function * archive (): AsyncGenerator<Buffer> {
      yield * textEntry(CAPTURE_HEADER_ENTRY, JSON.stringify(header, null, 2) + '\n')
      yield * fileEntry(CAPTURE_CHANGES_ENTRY, changesFile, changesBytes)
      yield * textEntry(CAPTURE_PACKAGES_ENTRY, diff.required.map(pkg => JSON.stringify(pkg) + '\n').join(''))
      const lines = createInterface({ input: createReadStream(changesFile), crlfDelay: Infinity })
      for await (const line of lines) {
        if (line === '') continue
        const change = JSON.parse(line) as CaptureChange
        if (carriesContent(change)) yield * contentEntry(change, state.rootDir)
      }
      yield Buffer.alloc(1024)
    }
    await pipeline(Readable.from(archive()), createGzip({ level: 6 }), createWriteStream(partial, { mode: 0o644 }))
    const summary = await summarizeCapturePackage(partial)
    await rename(partial, init.out)
    return { header, summary, packageBytes: (await stat(init.out)).size, packages: diff.packages }
  } finally {
    await rm(changesFile, { force: true })
    await rm(partial, { force: true })
  }
}

/** Reads a capture package file, checking it whole, and summarises what it changes. */
export async function summarizeCapturePackage (file: string): Promise<CaptureSummary> {
  let builder: CaptureSummaryBuilder | undefined
  await readCaptureArchive(createReadStream(file), {
    onHeader: header => { builder = new CaptureSummaryBuilder(header) },
    onChange: change => { builder!.addChange(change) },
    onRequiredPackage: pkg => { builder!.addRequiredPackage(pkg) }
  })
  return builder!.summary()
}
