import { chmod, copyFile, lstat, mkdir, readdir, rename, rm, rmdir, cp } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { randomBytes } from 'node:crypto'
import { MeshdeployError, type OverwritePolicy } from '../../protocol/index.js'

/** Distributing would overwrite files and the policy says fail: nothing was written. */
export class OverwriteRefusedError extends MeshdeployError {
  readonly paths: string[]
  constructor (paths: string[]) {
    super(`${paths.length} file(s) already exist and the overwrite policy is fail: ${paths.slice(0, 5).join(', ')}${paths.length > 5 ? ', …' : ''}`, 'overwrite-refused')
    this.name = 'OverwriteRefusedError'
    this.paths = paths
  }
}

export interface MergeOptions {
  /** replace: write over existing files; keep: leave them and add the others; fail: refuse if any exists. @default 'replace' */
  overwrite?: OverwritePolicy
  /** Octal mode given to every file written, e.g. `0644`; absent: the file's own. */
  fileMode?: string
}

export interface MergeResult {
  /** Files and links written. */
  written: number
  /** Files left as they were (overwrite keep). */
  kept: number
}

async function exists (path: string): Promise<boolean> {
  try {
    await lstat(path)
    return true
  } catch {
    return false
  }
}

/** Moves a file into place; a reader never sees half of it. Falls back to a copy across file systems. */
async function moveInto (from: string, to: string): Promise<void> {
  try {
    await rename(from, to)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'ENOTDIR') {
      await rm(to, { recursive: true, force: true })
      await moveInto(from, to)
      return
    }
    if (code !== 'EXDEV') throw error
    const temporary = `${to}.meshdeploy-${randomBytes(6).toString('hex')}`
    await cp(from, temporary, { verbatimSymlinks: true })
    await rename(temporary, to)
  }
}

/** Files and links under a staged tree, as paths relative to it; folders first. */
async function walk (root: string, folder = root, out: { folders: string[], files: string[] } = { folders: [], files: [] }): Promise<{ folders: string[], files: string[] }> {
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name)
    if (entry.isDirectory()) {
      out.folders.push(relative(root, path))
      await walk(root, path, out)
    } else {
      out.files.push(relative(root, path))
    }
  }
  return out
}

function modeOf (fileMode: string | undefined): number | undefined {
  return fileMode === undefined ? undefined : parseInt(fileMode, 8)
}

/**
 * Merges a staged tree into a destination file by file under an overwrite
 * policy. With `fail`, every conflict is found before anything is written.
 */
export async function mergeTree (staged: string, destination: string, options: MergeOptions = {}): Promise<MergeResult> {
  const policy = options.overwrite ?? 'replace'
  const { folders, files } = await walk(staged)
  const conflicts: string[] = []
  for (const file of files) if (await exists(join(destination, file))) conflicts.push(file)
  if (policy === 'fail' && conflicts.length > 0) throw new OverwriteRefusedError(conflicts)
  const skip = new Set(policy === 'keep' ? conflicts : [])
  for (const folder of folders) {
    const target = join(destination, folder)
    const info = await lstat(target).catch(() => undefined)
    if (info !== undefined && !info.isDirectory()) {
      if (policy === 'keep') continue
      await rm(target, { force: true })
    }
    await mkdir(target, { recursive: true })
  }
  const mode = modeOf(options.fileMode)
  let written = 0
  for (const file of files) {
    if (skip.has(file)) continue
    const from = join(staged, file)
    if (mode !== undefined && !(await lstat(from)).isSymbolicLink()) await chmod(from, mode)
    await moveInto(from, join(destination, file))
    written++
  }
  return { written, kept: skip.size }
}

/** Places one file into a folder under an overwrite policy, atomically. */
export async function placeFile (source: string, destination: string, name: string, options: MergeOptions = {}): Promise<MergeResult> {
  const target = join(destination, name)
  const policy = options.overwrite ?? 'replace'
  if (await exists(target)) {
    if (policy === 'fail') throw new OverwriteRefusedError([name])
    if (policy === 'keep') return { written: 0, kept: 1 }
  }
  await mkdir(destination, { recursive: true })
  const temporary = `${target}.meshdeploy-${randomBytes(6).toString('hex')}`
  await copyFile(source, temporary)
  try {
    const mode = modeOf(options.fileMode)
    if (mode !== undefined) await chmod(temporary, mode)
    await moveInto(temporary, target)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
  return { written: 1, kept: 0 }
}

/**
 * Removes what a distribution put into a folder: the listed entries (files
 * and links), then the folders among them that are left empty, deepest
 * first. Files the distribution did not bring stay.
 */
export async function removeEntries (destination: string, entries: readonly string[]): Promise<{ removed: number, missing: number }> {
  let removed = 0
  let missing = 0
  const folders: string[] = []
  for (const entry of entries) {
    const clean = entry.replace(/\/+$/, '')
    if (clean === '' || clean === '.') continue
    const target = join(destination, clean)
    const info = await lstat(target).catch(() => undefined)
    if (info === undefined) {
      if (!entry.endsWith('/')) missing++
      continue
    }
    if (info.isDirectory()) {
      folders.push(target)
      continue
    }
    await rm(target, { force: true })
    removed++
  }
  for (const folder of folders.sort((a, b) => b.length - a.length)) {
    try {
      if ((await readdir(folder)).length === 0) await rmdir(folder)
    } catch {}
  }
  return { removed, missing }
}
