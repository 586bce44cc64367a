import { createWriteStream } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { dirname, join, posix } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { randomBytes } from 'node:crypto'
import type yauzl from 'yauzl'
import { MeshdeployError, PathEscapeError } from '../../protocol/index.js'
import { staysInside } from './paths.js'
import { mergeTree, type MergeOptions, type MergeResult } from './distribute.js'

export type ArchiveKind = 'tar' | 'tar.gz' | 'zip'

/** An archive entry of a type the agent does not extract (device files, FIFOs). */
export class UnsupportedEntryError extends MeshdeployError {
  readonly entry: string
  constructor (entry: string, type: string) {
    super(`archive entry ${JSON.stringify(entry)} is a ${type}; only files, folders and links inside the archive are extracted`, 'unsupported-entry')
    this.name = 'UnsupportedEntryError'
    this.entry = entry
  }
}

export class CorruptArchiveError extends MeshdeployError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'corrupt-archive', options)
    this.name = 'CorruptArchiveError'
  }
}

const ALLOWED_TAR_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link'])
const IGNORED_TAR_TYPES = new Set(['GlobalExtendedHeader', 'ExtendedHeader', 'NextFileHasLongPath', 'NextFileHasLongLinkpath', 'OldGnuLongPath'])

/** Checks that an entry and, for a link, its target stay inside the destination. */
function checkEntry (destination: string, path: string, linkTarget?: string, hardLink = false): void {
  if (!staysInside(destination, path)) throw new PathEscapeError(path)
  if (linkTarget === undefined) return
  const resolved = hardLink ? linkTarget : posix.join(posix.dirname(path), linkTarget)
  if (posix.isAbsolute(linkTarget) || !staysInside(destination, resolved)) throw new PathEscapeError(`${path} -> ${linkTarget}`)
}

async function checkTar (file: string, destination: string): Promise<string[]> {
  const entries: string[] = []
  let problem: Error | undefined
  try {
    const { list: listTar } = await import('tar')
    await listTar({
      file,
      strict: true,
      onReadEntry: entry => {
        if (problem !== undefined || IGNORED_TAR_TYPES.has(entry.type)) return
        entries.push(entry.path)
        try {
          if (!ALLOWED_TAR_TYPES.has(entry.type)) throw new UnsupportedEntryError(entry.path, entry.type)
          checkEntry(destination, entry.path, entry.type === 'SymbolicLink' || entry.type === 'Link' ? entry.linkpath ?? '' : undefined, entry.type === 'Link')
        } catch (error) {
          problem = error as Error
        }
      }
    })
  } catch (error) {
    throw new CorruptArchiveError(`the archive cannot be read: ${(error as Error).message}`, { cause: error })
  }
  if (problem !== undefined) throw problem
  return entries
}

const S_IFMT = 0o170000
const S_IFLNK = 0o120000

async function openZip (file: string): Promise<yauzl.ZipFile> {
  // The archive readers load with the first archive: most agents never install one.
  const { default: yauzl } = await import('yauzl')
  return await new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, validateEntrySizes: true, strictFileNames: true, decodeStrings: true }, (error, zip) => {
      if (error !== null || zip === undefined) reject(new CorruptArchiveError(`the zip archive cannot be read: ${error?.message ?? 'unknown error'}`, { cause: error }))
      else resolve(zip)
    })
  })
}

/** Walks a zip archive, checking every entry first; with `extractTo`, writes the entries there. */
async function walkZip (file: string, destination: string, extractTo?: string): Promise<string[]> {
  const zip = await openZip(file)
  const entries: string[] = []
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on('error', error => {
        // yauzl checks names itself; its refusals of escaping names are path escapes, not damage.
        const escaping = /^(?:invalid relative path|absolute path): (.*)$/.exec((error as Error).message)
        reject(escaping !== null ? new PathEscapeError(escaping[1]) : new CorruptArchiveError(`the zip archive is damaged: ${(error as Error).message}`, { cause: error }))
      })
      zip.on('end', () => { resolve() })
      zip.on('entry', (entry: yauzl.Entry) => {
        const handle = async (): Promise<void> => {
          entries.push(entry.fileName)
          const mode = (entry.externalFileAttributes >>> 16) & S_IFMT
          if (mode === S_IFLNK) throw new UnsupportedEntryError(entry.fileName, 'symbolic link')
          checkEntry(destination, entry.fileName)
          if (extractTo === undefined) return
          const target = join(extractTo, entry.fileName)
          if (entry.fileName.endsWith('/')) {
            await mkdir(target, { recursive: true })
            return
          }
          await mkdir(dirname(target), { recursive: true })
          const stream = await new Promise<NodeJS.ReadableStream>((res, rej) => {
            zip.openReadStream(entry, (error, readable) => { if (error !== null || readable === undefined) rej(error); else res(readable) })
          })
          const unixMode = (entry.externalFileAttributes >>> 16) & 0o777
          await pipeline(stream, createWriteStream(target, { mode: unixMode !== 0 ? unixMode : 0o644 }))
        }
        handle().then(() => { zip.readEntry() }, reject)
      })
      zip.readEntry()
    })
  } finally {
    zip.close()
  }
  return entries
}

/** The entries of an archive (files, folders, links), checked to stay inside `destination`. */
export async function listArchive (file: string, kind: ArchiveKind, destination: string): Promise<string[]> {
  return kind === 'zip' ? await walkZip(file, destination) : await checkTar(file, destination)
}

/**
 * Extracts an archive into a folder. Every entry is checked before anything
 * is written: an entry or link that would land outside the folder, or a
 * device file, refuses the whole archive. Extraction goes to a staging
 * folder next to the destination and is merged in file by file at the end
 * (never replacing a folder wholesale), so a failure never leaves a
 * half-extracted tree looking complete, and files the archive does not
 * contain are left alone.
 */
export async function extractArchive (file: string, kind: ArchiveKind, destination: string, options: MergeOptions = {}): Promise<MergeResult & { entries: number }> {
  const entries = await listArchive(file, kind, destination)
  await mkdir(destination, { recursive: true })
  const staging = join(dirname(destination), `.meshdeploy-staging-${randomBytes(6).toString('hex')}`)
  await mkdir(staging, { recursive: true, mode: 0o700 })
  try {
    if (kind === 'zip') {
      await walkZip(file, destination, staging)
    } else {
      const { extract: extractTar } = await import('tar')
      await extractTar({ file, cwd: staging, strict: true, preservePaths: false, preserveOwner: false, unlink: true })
    }
    return { ...await mergeTree(staging, destination, options), entries: entries.length }
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
}
