import { createReadStream, createWriteStream } from 'node:fs'
import { copyFile, lstat, mkdir, rename, rm, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import {
  MeshdeployError, missingPackages, readCaptureArchive, type CaptureChange, type CaptureHeader, type Manifest, type RequiredPackage
} from '../../../protocol/index.js'
import { NotApplicableError } from '../../errors.js'
import type { InstallContext, InstallOutcome } from '../installer.js'
import { runProcess } from '../process.js'
import { captureApplicabilityProblem, deviceFacts, installedPackages, ownerNames, ownerOf, type DeviceFacts, type OwnerNames } from './device.js'
import {
  BACKUP_FOLDER, readJournal, recordPrevious, removeEntry, replaceWith, restoreEntries, setMetadata, temporaryBeside, writeJournal,
  type Journal, type JournalEntry
} from './journal.js'
import { Confinement, missingParents, orderSteps, type Step } from './plan.js'

/** Where the undo journals live, under the agent's data folder. */
export const CAPTURES_FOLDER = 'captures'

/** A change could not be made; everything already made was undone from the journal. */
export class CaptureRolledBackError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'capture-rolled-back')
    this.name = 'CaptureRolledBackError'
  }
}

/** Undoing left some paths as they are: the journal is kept so that another attempt finishes it. */
export class CaptureRestoreError extends MeshdeployError {
  readonly problems: string[]
  constructor (message: string, problems: string[]) {
    super(`${message}: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? `; and ${problems.length - 5} more` : ''}`, 'capture-restore-incomplete')
    this.name = 'CaptureRestoreError'
    this.problems = problems
  }
}

/** The device lacks system packages the captured change needs. */
export class MissingSystemPackagesError extends MeshdeployError {
  readonly missing: RequiredPackage[]
  constructor (missing: RequiredPackage[]) {
    const names = missing.slice(0, 20).map(pkg => `${pkg.name} ${pkg.version}`).join(', ')
    super(`the captured change needs system packages this device lacks: ${names}${missing.length > 20 ? `, and ${missing.length - 20} more` : ''}; install them first`, 'missing-system-packages')
    this.name = 'MissingSystemPackagesError'
    this.missing = missing
  }
}

export interface CaptureInstallOptions {
  /** @default the device's os-release and architecture */
  device?: DeviceFacts
}

function done (message: string): InstallOutcome {
  return { outcome: 'success', exitCode: 0, outputTail: '', message }
}

function folderOf (context: InstallContext, packageId: string): string {
  if (context.dataDir === undefined) throw new MeshdeployError('a capture package needs the agent\'s data folder for its undo journal', 'unsupported-kind')
  return join(context.dataDir, CAPTURES_FOLDER, packageId)
}

interface ReadCapture {
  header: CaptureHeader
  changes: CaptureChange[]
  required: RequiredPackage[]
}

/** Reads and checks the package, refusing another OS, family or architecture at its header, and stages the changed files' content. */
async function readPackage (packageFile: string, staging: string, device: DeviceFacts): Promise<ReadCapture> {
  const changes: CaptureChange[] = []
  const required: RequiredPackage[] = []
  const { header } = await readCaptureArchive(createReadStream(packageFile), {
    onHeader: header => {
      const problem = captureApplicabilityProblem(header.source, device)
      if (problem !== undefined) throw new NotApplicableError(`${header.name} ${header.version} was ${problem}`)
    },
    onChange: change => { changes.push(change) },
    onRequiredPackage: pkg => { required.push(pkg) },
    contentSink: (_change, index) => createWriteStream(join(staging, String(index)), { mode: 0o600 })
  })
  return { header, changes, required }
}

async function checkRequiredPackages (required: readonly RequiredPackage[], context: InstallContext): Promise<void> {
  if (required.length === 0) return
  const manager = required[0].manager
  const installed = await installedPackages(manager, context.packageRoot)
  if (installed === undefined) throw new MissingSystemPackagesError([...required])
  const missing = missingPackages(required, installed)
  if (missing.length > 0) throw new MissingSystemPackagesError(missing)
}

/** The steps with the parent folders this device lacks, every one checked to stay in its root. */
async function planFor (changes: readonly CaptureChange[], header: CaptureHeader, context: InstallContext, confinement: Confinement): Promise<Step[]> {
  const ordered = orderSteps(changes, context.installRoot)
  const willExist = new Set<string>()
  const steps: Step[] = []
  for (const step of ordered) {
    await confinement.check(step)
    if (step.action === 'mkdir' || step.action === 'write' || step.action === 'link') steps.push(...await missingParents(step, header.roots, context.installRoot, willExist))
    if (step.action === 'mkdir') willExist.add(step.path)
    steps.push(step)
  }
  return steps
}

/** Carries out one step. Returns a note for what it could not do without failing (a folder still in use, a missing file's mode). */
async function applyStep (step: Step, staging: string, names: OwnerNames): Promise<string | undefined> {
  const change = step.change
  if (step.action === 'remove') return await removeEntry(step.path) ? undefined : `kept folder ${step.capturedPath}: it holds files the package does not know`
  if (step.action === 'mkdir') {
    const info = await lstat(step.path).catch(() => undefined)
    if (info !== undefined && !info.isDirectory()) await rm(step.path, { force: true })
    if (info === undefined || !info.isDirectory()) await mkdir(step.path, { mode: 0o700 })
    await setMetadata(step.path, change !== undefined ? { mode: change.mode, ...ownerOf(change, names) } : { mode: 0o755, uid: 0, gid: 0 }, false)
    return undefined
  }
  if (change === undefined) return undefined
  const owner = ownerOf(change, names)
  if (step.action === 'metadata') {
    const info = await lstat(step.path).catch(() => undefined)
    if (info === undefined) return `${step.capturedPath} is not on this device: its mode and owner were not set`
    const type = info.isDirectory() ? 'dir' : info.isSymbolicLink() ? 'symlink' : 'file'
    if (type !== change.type) return `${step.capturedPath} is a ${type} on this device, not a ${change.type}: its mode and owner were not set`
    await setMetadata(step.path, { mode: change.mode, ...owner }, type === 'symlink')
    return undefined
  }
  const temporary = temporaryBeside(step.path)
  try {
    if (step.action === 'link') {
      await symlink(change.target!, temporary)
    } else {
      const staged = join(staging, String(step.index))
      await rename(staged, temporary).catch(async (error: NodeJS.ErrnoException) => {
        if (error.code !== 'EXDEV') throw error
        await copyFile(staged, temporary)
      })
    }
    await setMetadata(temporary, { mode: change.mode, ...owner, mtimeMs: change.mtimeMs }, step.action === 'link')
    await replaceWith(temporary, step.path)
  } catch (error) {
    await rm(temporary, { force: true }).catch(() => {})
    throw error
  }
  return undefined
}

function describeCounts (header: CaptureHeader): string {
  const { added, modified, removed, metadata } = header.counts
  return `${added} added, ${modified} modified, ${removed} removed, ${metadata} mode/owner change(s)`
}

/** Flushes the file systems, so that an install reported applied survives a power cut (one sync beats an fsync per file). */
async function flushAll (): Promise<void> {
  await runProcess({ command: 'sync', args: [], cwd: '/', timeoutMs: 120_000 }).catch(() => undefined)
}

/** Restores what an interrupted attempt left behind, before anything else happens to the package's paths. */
async function recover (folder: string, journal: Journal): Promise<void> {
  const result = await restoreEntries(journal.entries, join(folder, BACKUP_FOLDER))
  if (result.problems.length > 0) throw new CaptureRestoreError(`an interrupted install of ${journal.name} ${journal.version} could not be undone`, result.problems)
  await rm(folder, { recursive: true, force: true })
}

/**
 * Installs a capture package: checks that this device runs the OS,
 * distribution family and architecture it was captured on (else
 * NotApplicableError), that it has the system packages the change needs, and
 * that every path stays inside its captured root under the install root; then
 * writes the undo journal (what was at every path, with copies of files) and
 * flushes it, and applies the changes, each file by a rename of a complete
 * copy. On any failure every change made is undone from the journal and the
 * attempt fails with the reason: the device is as it was.
 */
export async function installCapture (manifest: Manifest, packageFile: string, context: InstallContext, options: CaptureInstallOptions = {}): Promise<InstallOutcome> {
  const folder = folderOf(context, manifest.package.id)
  const previous = await readJournal(folder)
  if (previous?.state === 'applied') return done(`${manifest.package.name} ${manifest.package.version} is already applied here (since ${previous.appliedAt ?? previous.createdAt}); its undo journal is kept`)
  if (previous !== undefined) await recover(folder, previous)

  const staging = join(context.workDir, 'capture-content')
  await rm(staging, { recursive: true, force: true })
  await mkdir(staging, { recursive: true, mode: 0o700 })
  try {
    const { header, changes, required } = await readPackage(packageFile, staging, options.device ?? await deviceFacts())
    await checkRequiredPackages(required, context)
    const confinement = new Confinement(context.installRoot, header.roots)
    const steps = await planFor(changes, header, context, confinement)

    const backupFolder = join(folder, BACKUP_FOLDER)
    await rm(folder, { recursive: true, force: true })
    await mkdir(backupFolder, { recursive: true, mode: 0o700 })
    const entries: JournalEntry[] = []
    try {
      for (const [position, step] of steps.entries()) {
        const entry: JournalEntry = { path: step.path, capturedPath: step.capturedPath, action: step.action, previous: await recordPrevious(step.path, backupFolder, String(position)) }
        if (step.action === 'write' && step.change !== undefined) entry.installed = { size: step.change.size!, mtimeMs: step.change.mtimeMs ?? 0 }
        entries.push(entry)
      }
    } catch (error) {
      await rm(folder, { recursive: true, force: true })
      throw error
    }
    const journal: Journal = {
      format: 'meshdeploy.capture-journal',
      formatVersion: 1,
      packageId: manifest.package.id,
      name: manifest.package.name,
      version: manifest.package.version,
      taskId: manifest.taskId,
      state: 'applying',
      createdAt: new Date().toISOString(),
      installRoot: context.installRoot,
      entries
    }
    await writeJournal(folder, journal)

    const names = await ownerNames()
    const notes: string[] = []
    let applied = 0
    try {
      for (const step of steps) {
        applied++
        await confinement.check(step)
        const note = await applyStep(step, staging, names)
        if (note !== undefined) notes.push(note)
        if (step.action === 'link' || step.action === 'mkdir' || step.action === 'remove') confinement.forget()
      }
    } catch (error) {
      const failed = steps[applied - 1]
      const result = await restoreEntries(entries.slice(0, applied), backupFolder)
      const reason = `could not ${failed.action === 'write' ? 'write' : failed.action} ${failed.capturedPath} (${(error as Error).message})`
      if (result.problems.length > 0) throw new CaptureRestoreError(`${reason}; undoing the ${applied} change(s) made left paths unrestored (the undo journal is kept and retried)`, result.problems)
      await rm(folder, { recursive: true, force: true })
      throw new CaptureRolledBackError(`${reason}; every change made (${applied - 1} of ${steps.length}) was undone from the undo journal: the device is as it was`)
    }
    await flushAll()
    await writeJournal(folder, { ...journal, state: 'applied', appliedAt: new Date().toISOString() })
    const previousContent = new Map(entries.filter(entry => entry.action === 'write').map(entry => [entry.capturedPath, entry.previous.sha256]))
    const differing = changes.filter(change => change.op === 'modify' && change.previousSha256 !== undefined && previousContent.get(change.path) !== change.previousSha256).length
    const parts = [`applied ${header.name} ${header.version}: ${describeCounts(header)}; undo journal in ${folder}`]
    if (differing > 0) parts.push(`${differing} modified file(s) differed here from the reference machine's before the install`)
    if (notes.length > 0) parts.push(notes.slice(0, 10).join('; ') + (notes.length > 10 ? `; and ${notes.length - 10} more` : ''))
    return done(parts.join('; '))
  } finally {
    await rm(staging, { recursive: true, force: true }).catch(() => {})
  }
}

/** Uninstalls a capture package: applies its undo journal, putting back every path it changed as it was before the install. */
export async function undoCapture (manifest: Manifest, context: InstallContext): Promise<InstallOutcome> {
  const folder = folderOf(context, manifest.package.id)
  const journal = await readJournal(folder)
  if (journal === undefined) return done(`no undo journal of ${manifest.package.name} ${manifest.package.version} on this device: it is not installed, nothing to undo`)
  let changedSince = 0
  for (const entry of journal.entries) {
    if (entry.installed === undefined) continue
    const info = await lstat(entry.path).catch(() => undefined)
    if (info === undefined || info.size !== entry.installed.size || Math.abs(info.mtimeMs - entry.installed.mtimeMs) > 1) changedSince++
  }
  const result = await restoreEntries(journal.entries, join(folder, BACKUP_FOLDER))
  if (result.problems.length > 0) throw new CaptureRestoreError(`undoing ${journal.name} ${journal.version} left paths unrestored (the undo journal is kept)`, result.problems)
  await flushAll()
  await rm(folder, { recursive: true, force: true })
  const parts = [`undid ${journal.name} ${journal.version}: ${result.restored} path(s) put back as they were before the install`]
  if (changedSince > 0) parts.push(`${changedSince} file(s) had changed since the install and were put back too`)
  if (result.keptFolders.length > 0) parts.push(`kept ${result.keptFolders.length} folder(s) that now hold other files: ${result.keptFolders.slice(0, 5).join(', ')}`)
  return done(parts.join('; '))
}
