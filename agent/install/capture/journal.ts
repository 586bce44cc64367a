import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { chmod, copyFile, lchown, lstat, lutimes, mkdir, open, readFile, readlink, rename, rm, rmdir, symlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { z } from 'zod'
import { MeshdeployError, syncFolder, writeFileAtomic } from '../../../protocol/index.js'

/**
 * The undo journal of a capture package: for every path the package
 * changes, what was there before (whether it existed, its type, mode, owner,
 * modification time, link target, and a copy of a file's content), in the
 * order the changes are applied. It is written and flushed before the first
 * change; restoring walks it backwards. It lives in the agent's data folder,
 * one folder per package: `captures/<package id>/journal.json` and `backup/`.
 */
export const JOURNAL_FILE = 'journal.json'
export const BACKUP_FOLDER = 'backup'

export const ENTRY_KINDS = ['file', 'dir', 'symlink'] as const

const previousSchema = z.object({
  existed: z.boolean(),
  type: z.enum(ENTRY_KINDS).optional(),
  mode: z.number().int().optional(),
  uid: z.number().int().optional(),
  gid: z.number().int().optional(),
  mtimeMs: z.number().optional(),
  target: z.string().optional(),
  /** File name of the content copy in backup/. */
  backup: z.string().optional(),
  sha256: z.string().optional()
}).strict()

export type PreviousState = z.infer<typeof previousSchema>

const journalEntrySchema = z.object({
  /** The path on this device (under the install root). */
  path: z.string(),
  /** The path as captured on the reference machine. */
  capturedPath: z.string(),
  action: z.enum(['remove', 'mkdir', 'write', 'link', 'metadata']),
  previous: previousSchema,
  /** What the package left there (files): to tell at undo time whether someone changed it since. */
  installed: z.object({ size: z.number().int(), mtimeMs: z.number() }).strict().optional()
}).strict()

export type JournalEntry = z.infer<typeof journalEntrySchema>

export const journalSchema = z.object({
  format: z.literal('meshdeploy.capture-journal'),
  formatVersion: z.literal(1),
  packageId: z.string(),
  name: z.string(),
  version: z.string(),
  taskId: z.string(),
  /** applying: changes may be half made (restore before anything else); applied: the package is in place. */
  state: z.enum(['applying', 'applied']),
  createdAt: z.string(),
  appliedAt: z.string().optional(),
  installRoot: z.string(),
  entries: z.array(journalEntrySchema)
}).strict()

export type Journal = z.infer<typeof journalSchema>

/** The undo journal cannot be read: the agent will not guess what to restore. */
export class JournalCorruptError extends MeshdeployError {
  constructor (path: string, problem: string) {
    super(`the undo journal ${path} is damaged (${problem}); nothing was changed`, 'journal-corrupt')
    this.name = 'JournalCorruptError'
  }
}

export async function readJournal (folder: string): Promise<Journal | undefined> {
  const path = join(folder, JOURNAL_FILE)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  let decoded: unknown
  try {
    decoded = JSON.parse(text)
  } catch {
    throw new JournalCorruptError(path, 'not JSON')
  }
  const parsed = journalSchema.safeParse(decoded)
  if (!parsed.success) throw new JournalCorruptError(path, z.prettifyError(parsed.error))
  return parsed.data
}

export async function writeJournal (folder: string, journal: Journal): Promise<void> {
  await writeFileAtomic(join(folder, JOURNAL_FILE), JSON.stringify(journal))
}

/**
 * What is at `path` now, with a flushed copy of a file's content in
 * `backupFolder` under `backupName`. Special files (FIFOs, sockets, devices)
 * are refused: a capture never replaces them.
 */
export async function recordPrevious (path: string, backupFolder: string, backupName: string): Promise<PreviousState> {
  const info = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return undefined
    throw error
  })
  if (info === undefined) return { existed: false }
  const base = { existed: true, mode: info.mode & 0o7777, uid: info.uid, gid: info.gid, mtimeMs: info.mtimeMs }
  if (info.isDirectory()) return { ...base, type: 'dir' }
  if (info.isSymbolicLink()) return { ...base, type: 'symlink', target: await readlink(path) }
  if (!info.isFile()) throw new MeshdeployError(`${path} is a special file on this device; a capture package replaces files, folders and links only`, 'unsupported-entry')
  const hash = createHash('sha256')
  const copy = await open(join(backupFolder, backupName), 'wx', 0o600)
  try {
    for await (const piece of createReadStream(path)) {
      hash.update(piece as Buffer)
      await copy.write(piece as Buffer)
    }
    await copy.sync()
  } finally {
    await copy.close()
  }
  return { ...base, type: 'file', backup: backupName, sha256: hash.digest('hex') }
}

/** A name beside `path` for a file being prepared: renamed over `path` when complete. */
export function temporaryBeside (path: string): string {
  return join(dirname(path), `.${basename(path).slice(0, 100)}.meshdeploy-${randomBytes(6).toString('hex')}`)
}

/** Removes whatever is at `path`: a file or link, or a folder when it is empty. Returns false for a folder that is not empty. */
export async function removeEntry (path: string): Promise<boolean> {
  const info = await lstat(path).catch(() => undefined)
  if (info === undefined) return true
  if (!info.isDirectory()) {
    await rm(path, { force: true })
    return true
  }
  try {
    await rmdir(path)
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (error as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw error
  }
}

/** Sets owner, then mode (a chown clears setuid bits), then the modification time; links get their owner only. */
export async function setMetadata (path: string, state: { mode?: number, uid?: number, gid?: number, mtimeMs?: number }, isLink: boolean): Promise<void> {
  if (state.uid !== undefined && state.gid !== undefined && process.getuid?.() === 0) await lchown(path, state.uid, state.gid)
  if (!isLink && state.mode !== undefined) await chmod(path, state.mode)
  if (state.mtimeMs !== undefined) {
    const seconds = state.mtimeMs / 1000
    await lutimes(path, seconds, seconds)
  }
}

/** Puts a prepared file or link in place of whatever is at `path`, in one rename (an empty folder there is removed first). */
export async function replaceWith (temporary: string, path: string): Promise<void> {
  const info = await lstat(path).catch(() => undefined)
  if (info?.isDirectory() === true) await rmdir(path)
  await rename(temporary, path)
}

/** Puts back what the journal entry says was at its path. */
export async function restoreEntry (entry: JournalEntry, backupFolder: string): Promise<'restored' | 'kept-folder'> {
  const { path, previous } = entry
  if (!previous.existed) return await removeEntry(path) ? 'restored' : 'kept-folder'
  await mkdir(dirname(path), { recursive: true })
  if (previous.type === 'dir') {
    const info = await lstat(path).catch(() => undefined)
    if (info !== undefined && !info.isDirectory()) await rm(path, { force: true })
    if (info === undefined || !info.isDirectory()) await mkdir(path)
    await setMetadata(path, { ...previous, mtimeMs: undefined }, false)
    return 'restored'
  }
  const temporary = temporaryBeside(path)
  try {
    if (previous.type === 'symlink') await symlink(previous.target!, temporary)
    else await copyFile(join(backupFolder, previous.backup!), temporary)
    await setMetadata(temporary, previous, previous.type === 'symlink')
    await replaceWith(temporary, path)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
  return 'restored'
}

export interface RestoreResult {
  restored: number
  /** Folders the package created that now hold something else, left in place. */
  keptFolders: string[]
  /** Entries that could not be restored, with why. */
  problems: string[]
}

/** Restores entries from last to first; goes on past a failing entry and reports it. Flushes the folders it touched. */
export async function restoreEntries (entries: readonly JournalEntry[], backupFolder: string): Promise<RestoreResult> {
  const result: RestoreResult = { restored: 0, keptFolders: [], problems: [] }
  const touched = new Set<string>()
  for (let index = entries.length - 1; index >= 0; index--) {
    const entry = entries[index]
    try {
      if (await restoreEntry(entry, backupFolder) === 'kept-folder') result.keptFolders.push(entry.path)
      else result.restored++
      touched.add(dirname(entry.path))
    } catch (error) {
      result.problems.push(`${entry.path}: ${(error as Error).message}`)
    }
  }
  for (const folder of touched) await syncFolder(folder).catch(() => {})
  return result
}
