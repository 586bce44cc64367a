import { createHash } from 'node:crypto'
import { closeSync, createReadStream, createWriteStream, fstatSync, lstatSync, openSync, readlinkSync, readSync } from 'node:fs'
import { readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGunzip, createGzip, constants as zlib } from 'node:zlib'
import { z } from 'zod'
import {
  captureSourceSchema, checkCaptureRoots, comparePaths, isUnder, sha256OfFile
} from '../../protocol/index.js'
import { ExcludeMatcher } from './excludes.js'

/** One file, folder or link as a snapshot records it. Special files (FIFOs, sockets, devices) are not recorded. */
export const snapshotEntrySchema = z.object({
  path: z.string(),
  type: z.enum(['file', 'dir', 'symlink']),
  mode: z.number().int(),
  uid: z.number().int(),
  gid: z.number().int(),
  size: z.number().int(),
  mtimeMs: z.number(),
  /** Changes with any write or metadata change, and cannot be set back: with size, mtime and inode it lets a later walk reuse the hash. */
  ctimeMs: z.number(),
  ino: z.number(),
  sha256: z.string().optional(),
  target: z.string().optional()
}).strict()

export type SnapshotEntry = z.infer<typeof snapshotEntrySchema>

const installedPackageSchema = z.object({ name: z.string(), version: z.string(), arch: z.string() }).strict()

export const stateHeaderSchema = z.object({
  format: z.literal('meshdeploy.capture-state'),
  formatVersion: z.literal(1),
  createdAt: z.string(),
  /** The folder the captured system lives under: '/' for this machine, or a mounted image. */
  rootDir: z.string(),
  roots: z.array(z.string()).min(1),
  excludes: z.array(z.string()),
  source: captureSourceSchema,
  packages: z.array(installedPackageSchema)
}).strict()

export type StateHeader = z.infer<typeof stateHeaderSchema>

const stateTrailerSchema = z.object({ end: z.literal(true), entries: z.number().int(), files: z.number().int(), bytes: z.number().int(), skipped: z.number().int() }).strict()

/** Hashes this many entries at once while keeping them in walk order. */
export const DEFAULT_SNAPSHOT_CONCURRENCY = 16
/** Files up to this size are read in one call rather than streamed. */
const SMALL_FILE_BYTES = 1024 * 1024

/** The state file is not a snapshot, or was cut short. */
export class SnapshotStateError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'SnapshotStateError'
  }
}

/** Drops roots that lie under another root, sorted in walk order. */
export function normaliseRoots (roots: readonly string[]): string[] {
  const cleaned = roots.map(root => root.length > 1 ? root.replace(/\/+$/, '') : root)
  checkCaptureRoots(cleaned)
  const sorted = [...new Set(cleaned)].sort(comparePaths)
  return sorted.filter(root => !sorted.some(other => other !== root && isUnder(root, other)))
}

interface Walked { path: string, isDirectory: boolean }

/** Paths under the roots in depth-first order with sorted names; memory holds one listing per level. */
async function * walkPaths (rootDir: string, roots: readonly string[], excludes: ExcludeMatcher): AsyncGenerator<Walked> {
  async function * folder (path: string): AsyncGenerator<Walked> {
    let names: string[]
    try {
      const listing = await readdir(join(rootDir, path), { withFileTypes: true })
      names = listing.map(entry => entry.name)
      const folders = new Set(listing.filter(entry => entry.isDirectory()).map(entry => entry.name))
      names.sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
      for (const name of names) {
        const child = path === '/' ? `/${name}` : `${path}/${name}`
        if (excludes.excludes(child)) continue
        const isDirectory = folders.has(name)
        yield { path: child, isDirectory }
        if (isDirectory) yield * folder(child)
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') return
      throw error
    }
  }
  for (const root of roots) {
    if (excludes.excludes(root)) continue
    yield * folder(root)
  }
}

/** Maps a stream with up to `concurrency` calls in flight, yielding results in the stream's order. */
async function * mapOrdered<T, R> (source: AsyncIterable<T>, concurrency: number, map: (item: T) => Promise<R>): AsyncGenerator<R> {
  const window: Array<Promise<R>> = []
  for await (const item of source) {
    const result = map(item)
    result.catch(() => {})
    window.push(result)
    if (window.length >= concurrency) yield await window.shift()!
  }
  while (window.length > 0) yield await window.shift()!
}

/**
 * Hashes a file. Small files (most of a system) are read with plain
 * system calls on the main thread: a profile of 30,000 files showed the
 * promise API's open, fstat, read and close spending some 90 µs of main-thread
 * time per file, ten times the reading itself. Large files stream.
 */
async function hashFile (path: string, size: number): Promise<string> {
  if (size > SMALL_FILE_BYTES) return await sha256OfFile(path)
  const descriptor = openSync(path, 'r')
  try {
    const length = fstatSync(descriptor).size
    if (length > SMALL_FILE_BYTES) return await sha256OfFile(path)
    const buffer = Buffer.allocUnsafe(length)
    let offset = 0
    while (offset < length) {
      const read = readSync(descriptor, buffer, offset, length - offset, offset)
      if (read === 0) break
      offset += read
    }
    return createHash('sha256').update(buffer.subarray(0, offset)).digest('hex')
  } finally {
    closeSync(descriptor)
  }
}

/**
 * Describes one path; with `previous` (the same path in an earlier snapshot)
 * a file whose size, modification time, change time and inode are unchanged
 * keeps its hash without being read again, as git's index does.
 */
async function describe (rootDir: string, path: string, previous?: SnapshotEntry): Promise<SnapshotEntry | undefined> {
  const full = join(rootDir, path)
  let info
  try {
    info = lstatSync(full)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  const type = info.isDirectory() ? 'dir' : info.isSymbolicLink() ? 'symlink' : info.isFile() ? 'file' : undefined
  if (type === undefined) return undefined
  const entry: SnapshotEntry = { path, type, mode: info.mode & 0o7777, uid: info.uid, gid: info.gid, size: type === 'dir' ? 0 : info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs, ino: info.ino }
  try {
    if (type === 'symlink') entry.target = readlinkSync(full)
    if (type === 'file') {
      const unchanged = previous?.type === 'file' && previous.sha256 !== undefined && previous.size === entry.size && previous.mtimeMs === entry.mtimeMs && previous.ctimeMs === entry.ctimeMs && previous.ino === entry.ino
      entry.sha256 = unchanged ? previous.sha256 : await hashFile(full, info.size)
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  return entry
}

export interface SnapshotInit {
  rootDir: string
  roots: readonly string[]
  excludes: readonly string[]
  /** @default DEFAULT_SNAPSHOT_CONCURRENCY */
  concurrency?: number
}

/** Walks the roots and describes every entry, in walk order. */
export async function * snapshotEntries (init: SnapshotInit): AsyncGenerator<SnapshotEntry> {
  const matcher = new ExcludeMatcher(init.excludes)
  const described = mapOrdered(walkPaths(init.rootDir, init.roots, matcher), init.concurrency ?? DEFAULT_SNAPSHOT_CONCURRENCY, async walked => await describe(init.rootDir, walked.path))
  for await (const entry of described) if (entry !== undefined) yield entry
}

export interface SnapshotTotals {
  entries: number
  files: number
  /** Bytes of file content hashed. */
  bytes: number
  skipped: number
}

/**
 * Writes a snapshot state file: gzip-compressed JSON lines, a header (roots,
 * excludes, the source system, its installed packages), one line per entry
 * in walk order, and a trailer with the totals that marks it complete. It is
 * written beside its final name and renamed there at the end.
 */
export async function writeSnapshot (file: string, header: StateHeader, init: SnapshotInit): Promise<SnapshotTotals> {
  const totals: SnapshotTotals = { entries: 0, files: 0, bytes: 0, skipped: 0 }
  // Lines go to the compressor in batches: one zlib call per line cost more than the hashing.
  async function * lines (): AsyncGenerator<string> {
    let batch = JSON.stringify(header) + '\n'
    for await (const entry of snapshotEntries(init)) {
      totals.entries++
      if (entry.type === 'file') {
        totals.files++
        totals.bytes += entry.size
      }
      batch += JSON.stringify(entry) + '\n'
      if (batch.length >= 64 * 1024) {
        yield batch
        batch = ''
      }
    }
    yield batch + JSON.stringify({ end: true, ...totals }) + '\n'
  }
  const temporary = `${file}.partial`
  try {
    await pipeline(Readable.from(lines()), createGzip({ level: zlib.Z_BEST_SPEED }), createWriteStream(temporary, { mode: 0o600 }))
    await rename(temporary, file)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
  return totals
}

/** A snapshot read back: its header, then its entries in walk order. */
export interface SnapshotReader {
  header: StateHeader
  entries: AsyncGenerator<SnapshotEntry>
}

export async function readSnapshot (file: string): Promise<SnapshotReader> {
  const source = createReadStream(file)
  const gunzip = createGunzip()
  source.on('error', error => { gunzip.destroy(error) })
  const lines = createInterface({ input: source.pipe(gunzip), crlfDelay: Infinity })[Symbol.asyncIterator]()
  const parse = (line: string, what: string): unknown => {
    try {
      return JSON.parse(line)
    } catch {
      throw new SnapshotStateError(`${file} is not a capture state file (${what} is not JSON)`)
    }
  }
  let first: IteratorResult<string>
  try {
    first = await lines.next()
  } catch (error) {
    throw new SnapshotStateError(`${file} cannot be read as a capture state file: ${(error as Error).message}`)
  }
  const header = stateHeaderSchema.safeParse(first.done === true ? undefined : parse(first.value, 'its first line'))
  if (!header.success) throw new SnapshotStateError(`${file} is not a capture state file made by meshdeploy capture start`)
  async function * entries (): AsyncGenerator<SnapshotEntry> {
    for (;;) {
      const next = await lines.next()
      if (next.done === true) throw new SnapshotStateError(`${file} ends early: the snapshot was cut short; run capture start again`)
      const decoded = parse(next.value, 'a line')
      if (stateTrailerSchema.safeParse(decoded).success) return
      const entry = snapshotEntrySchema.safeParse(decoded)
      if (!entry.success) throw new SnapshotStateError(`${file} holds a damaged entry`)
      yield entry.data
    }
  }
  return { header: header.data, entries: entries() }
}

/** One difference between the snapshot and the system now. */
export interface DiffItem {
  op: 'add' | 'modify' | 'remove' | 'metadata'
  path: string
  before?: SnapshotEntry
  after?: SnapshotEntry
}

function compare (before: SnapshotEntry, after: SnapshotEntry): DiffItem['op'] | undefined {
  if (before.type !== after.type) return 'modify'
  if (after.type === 'file' && before.sha256 !== after.sha256) return 'modify'
  if (after.type === 'symlink' && before.target !== after.target) return 'modify'
  if (before.mode !== after.mode || before.uid !== after.uid || before.gid !== after.gid) return 'metadata'
  return undefined
}

/**
 * Compares a snapshot with the system as it is now, walking both in the
 * same order side by side: memory stays bounded whatever the number of
 * files, and unchanged files are not read again.
 */
export async function * diffSnapshot (snapshot: SnapshotReader, init: { concurrency?: number, excludes?: readonly string[] } = {}): AsyncGenerator<DiffItem> {
  const { header } = snapshot
  const matcher = new ExcludeMatcher([...header.excludes, ...init.excludes ?? []])
  const before = snapshot.entries
  let pending = await before.next()
  type Pair = { path: string, previous?: SnapshotEntry, removed: SnapshotEntry[] }
  async function * pairs (): AsyncGenerator<Pair> {
    for await (const walked of walkPaths(header.rootDir, header.roots, matcher)) {
      const removed: SnapshotEntry[] = []
      while (pending.done !== true && comparePaths(pending.value.path, walked.path) < 0) {
        removed.push(pending.value)
        pending = await before.next()
      }
      let previous: SnapshotEntry | undefined
      if (pending.done !== true && pending.value.path === walked.path) {
        previous = pending.value
        pending = await before.next()
      }
      yield { path: walked.path, removed, ...(previous !== undefined ? { previous } : {}) }
    }
  }
  const described = mapOrdered(pairs(), init.concurrency ?? DEFAULT_SNAPSHOT_CONCURRENCY, async pair => ({ pair, entry: await describe(header.rootDir, pair.path, pair.previous) }))
  for await (const { pair, entry } of described) {
    for (const gone of pair.removed) yield { op: 'remove', path: gone.path, before: gone }
    if (entry === undefined) {
      if (pair.previous !== undefined) yield { op: 'remove', path: pair.path, before: pair.previous }
      continue
    }
    if (pair.previous === undefined) {
      yield { op: 'add', path: entry.path, after: entry }
      continue
    }
    const op = compare(pair.previous, entry)
    if (op !== undefined) yield { op, path: entry.path, before: pair.previous, after: entry }
  }
  while (pending.done !== true) {
    yield { op: 'remove', path: pending.value.path, before: pending.value }
    pending = await before.next()
  }
}
