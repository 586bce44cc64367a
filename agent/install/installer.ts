import { chmod, copyFile, mkdir, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { MeshdeployError, exitOutcome, sanitizeFileName, type ExitOutcome, type Manifest } from '../../protocol/index.js'
import { extractArchive, type ArchiveKind } from './archive.js'
import { underInstallRoot, staysInside } from './paths.js'
import { runProcess } from './process.js'
import { InstallFailedError } from '../errors.js'

export interface InstallContext {
  /** Folder that absolute paths of the manifest are resolved under. @default '/' */
  installRoot: string
  /** Scratch folder of the task. */
  workDir: string
  signal?: AbortSignal
}

export interface InstallOutcome {
  outcome: ExitOutcome
  exitCode: number | null
  outputTail: string
  message: string
}

/** A package kind this device cannot install. */
export class UnsupportedKindError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'unsupported-kind')
    this.name = 'UnsupportedKindError'
  }
}

const ARCHIVES = new Set(['tar', 'tar.gz', 'zip'])

function environmentFor (manifest: Manifest, packageFile: string, context: InstallContext): NodeJS.ProcessEnv {
  return {
    ...process.env,
    MESHDEPLOY_INSTALL_ROOT: context.installRoot,
    MESHDEPLOY_TASK_ID: manifest.taskId,
    MESHDEPLOY_PACKAGE_FILE: packageFile,
    MESHDEPLOY_PACKAGE_NAME: manifest.package.name,
    MESHDEPLOY_PACKAGE_VERSION: manifest.package.version,
    MESHDEPLOY_WORK_DIR: context.workDir
  }
}

async function runInstaller (command: string, args: string[], cwd: string, manifest: Manifest, packageFile: string, context: InstallContext): Promise<InstallOutcome> {
  const result = await runProcess({
    command,
    args,
    cwd,
    env: environmentFor(manifest, packageFile, context),
    timeoutMs: manifest.install.timeoutSeconds * 1000,
    ...(context.signal !== undefined ? { signal: context.signal } : {})
  })
  if (result.timedOut) {
    throw new InstallFailedError(`the installer did not finish within ${manifest.install.timeoutSeconds} s and was stopped`, result.exitCode, result.outputTail)
  }
  const outcome = exitOutcome(result.exitCode)
  const ended = result.exitCode !== null ? `exited with ${result.exitCode}` : `was killed by ${result.signal ?? 'a signal'}`
  return { outcome, exitCode: result.exitCode, outputTail: result.outputTail, message: `the installer ${ended}` }
}

/** Copies a file into place atomically: a reader never sees half of it. */
async function placeFile (source: string, target: string): Promise<void> {
  const temporary = `${target}.meshdeploy-${randomBytes(6).toString('hex')}`
  await copyFile(source, temporary)
  try {
    await rename(temporary, target)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
}

/**
 * Installs or distributes a verified package file as its manifest says.
 * Linux kinds run here: shell scripts, and archives (extracted, then their
 * entry script run, or distributed into a folder), and plain files.
 */
export async function install (manifest: Manifest, packageFile: string, context: InstallContext): Promise<InstallOutcome> {
  const { kind } = manifest.package
  const { install: spec } = manifest
  if (manifest.action === 'distribute-files') {
    if (spec.destination === undefined) throw new UnsupportedKindError('distribute-files needs a destination')
    const destination = underInstallRoot(context.installRoot, spec.destination)
    if (ARCHIVES.has(kind)) {
      const { entries } = await extractArchive(packageFile, kind as ArchiveKind, destination)
      return { outcome: 'success', exitCode: 0, outputTail: '', message: `extracted ${entries} entries into ${spec.destination}` }
    }
    await mkdir(destination, { recursive: true })
    await placeFile(packageFile, join(destination, sanitizeFileName(manifest.package.fileName)))
    return { outcome: 'success', exitCode: 0, outputTail: '', message: `copied ${manifest.package.fileName} into ${spec.destination}` }
  }
  if (manifest.action !== 'install') throw new UnsupportedKindError(`the ${manifest.action} action is not supported by this agent`)
  if (kind === 'shell') {
    await chmod(packageFile, 0o700)
    return await runInstaller('/bin/sh', [packageFile, ...spec.runArgs], context.workDir, manifest, packageFile, context)
  }
  if (ARCHIVES.has(kind)) {
    const entry = spec.entry ?? 'install.sh'
    const extracted = join(context.workDir, 'extracted')
    await rm(extracted, { recursive: true, force: true })
    await extractArchive(packageFile, kind as ArchiveKind, extracted)
    if (!staysInside(extracted, entry)) throw new UnsupportedKindError(`the entry ${entry} is not inside the archive`)
    const script = join(extracted, entry)
    try {
      if (!(await stat(script)).isFile()) throw new Error('not a file')
    } catch {
      throw new UnsupportedKindError(`the archive has no entry script ${entry}`)
    }
    const [command, args] = entry.endsWith('.sh') ? ['/bin/sh', [script, ...spec.runArgs]] : [script, spec.runArgs]
    if (command === script) await chmod(script, 0o700)
    return await runInstaller(command, args, extracted, manifest, packageFile, context)
  }
  throw new UnsupportedKindError(`this agent cannot install ${kind} packages`)
}
