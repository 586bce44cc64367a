import { createWriteStream } from 'node:fs'
import { mkdir, readdir, rename, rm, cp } from 'node:fs/promises'
import { dirname, join, posix } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { randomBytes } from 'node:crypto'
import { list as listTar, extract as extractTar } from 'tar'
import yauzl from 'yauzl'
import { MeshdeployError, PathEscapeError } from '../../protocol/index.js'
import { staysInside } from './paths.js'

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

async function checkTar (file: string, destination: string): Promise<number> {
  let entries = 0
  let problem: Error | undefined
  try {
    await listTar({
      file,
      strict: true,
      onReadEntry: entry => {
        if (problem !== undefined || IGNORED_TAR_TYPES.has(entry.type)) return
        entries++
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
  return await new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, validateEntrySizes: true, strictFileNames: true, decodeStrings: true }, (error, zip) => {
      if (error !== null || zip === undefined) reject(new CorruptArchiveError(`the zip archive cannot be read: ${error?.message ?? 'unknown error'}`, { cause: error }))
      else resolve(zip)
    })
  })
}

/** Walks a zip archive, checking every entry first; with `extractTo`, writes the entries there. */
async function walkZip (file: string, destination: string, extractTo?: string): Promise<number> {
  const zip = await openZip(file)
  let entries = 0
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
          entries++
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

/**
 * Extracts an archive into a folder. Every entry is checked before anything
 * is written: an entry or link that would land outside the folder, or a
 * device file, refuses the whole archive. Extraction goes to a staging
 * folder next to the destination and its entries are moved in at the end, so
 * a failure never leaves a half-extracted tree looking complete.
 */
export async function extractArchive (file: string, kind: ArchiveKind, destination: string): Promise<{ entries: number }> {
  const entries = kind === 'zip' ? await walkZip(file, destination) : await checkTar(file, destination)
  await mkdir(destination, { recursive: true })
  const staging = join(dirname(destination), `.meshdeploy-staging-${randomBytes(6).toString('hex')}`)
  await mkdir(staging, { recursive: true, mode: 0o700 })
  try {
    if (kind === 'zip') {
      await walkZip(file, destination, staging)
    } else {
      await extractTar({ file, cwd: staging, strict: true, preservePaths: false, preserveOwner: false, unlink: true })
    }
    for (const name of await readdir(staging)) {
      const from = join(staging, name)
      const to = join(destination, name)
      await rm(to, { recursive: true, force: true })
      try {
        await rename(from, to)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error
        await cp(from, to, { recursive: true, verbatimSymlinks: true })
      }
    }
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
  return { entries }
}
