import { chmod, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { MeshdeployError, sanitizeFileName, type Manifest, type Platform } from '../../protocol/index.js'
import { extractArchive, type ArchiveKind } from './archive.js'
import { placeFile } from './distribute.js'
import { underInstallRoot, staysInside } from './paths.js'
import { installCommand, type CommandLine } from './commands.js'
import { runInstaller, type InstallOutcome } from './run.js'
import { currentPlatform } from '../platform.js'
import { ensureDpkgDatabase } from './linux-packages.js'
import { installCapture } from './capture/index.js'

export type { InstallOutcome }

export interface InstallContext {
  /** Folder that absolute paths of the manifest are resolved under. */
  installRoot: string
  /** Root that Linux package managers install under: '/' for the system, or a private root (dpkg --root). */
  packageRoot: string
  /** Scratch folder of the task. */
  workDir: string
  /** The agent's data folder: capture packages keep their undo journals there. */
  dataDir?: string
  /** @default the running platform */
  platform?: Platform
  signal?: AbortSignal
}

/** A package kind this device cannot install. */
export class UnsupportedKindError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'unsupported-kind')
    this.name = 'UnsupportedKindError'
  }
}

export const ARCHIVE_KINDS: ReadonlySet<string> = new Set(['tar', 'tar.gz', 'zip'])

/** Where each installer kind runs. */
const KIND_PLATFORM: Record<string, Platform> = { msi: 'windows', exe: 'windows', bat: 'windows', ps1: 'windows', pkg: 'macos', deb: 'linux', rpm: 'linux' }

export function environmentFor (manifest: Manifest, packageFile: string | undefined, context: InstallContext): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    MESHDEPLOY_INSTALL_ROOT: context.installRoot,
    MESHDEPLOY_TASK_ID: manifest.taskId,
    MESHDEPLOY_ACTION: manifest.action,
    MESHDEPLOY_PACKAGE_NAME: manifest.package.name,
    MESHDEPLOY_PACKAGE_VERSION: manifest.package.version,
    MESHDEPLOY_WORK_DIR: context.workDir,
    DEBIAN_FRONTEND: 'noninteractive'
  }
  if (packageFile !== undefined) env.MESHDEPLOY_PACKAGE_FILE = packageFile
  return env
}

function checkPlatform (kind: string, context: InstallContext): void {
  const needed = KIND_PLATFORM[kind]
  const platform = context.platform ?? currentPlatform()
  if (needed !== undefined && needed !== platform) throw new UnsupportedKindError(`a ${kind} package installs on ${needed} only; this device runs ${platform}`)
}

async function run (line: CommandLine, manifest: Manifest, packageFile: string, context: InstallContext, cwd: string, logFile?: string): Promise<InstallOutcome> {
  return await runInstaller({
    line,
    cwd,
    env: environmentFor(manifest, packageFile, context),
    timeoutSeconds: manifest.install.timeoutSeconds,
    what: 'the installer',
    ...(manifest.install.exitCodes !== undefined ? { exitCodes: manifest.install.exitCodes } : {}),
    ...(logFile !== undefined ? { logFile } : {}),
    ...(context.signal !== undefined ? { signal: context.signal } : {})
  })
}

/** Copies or extracts the package into its destination under the task's overwrite policy and file mode. */
async function distribute (manifest: Manifest, packageFile: string, context: InstallContext): Promise<InstallOutcome> {
  const { kind } = manifest.package
  const spec = manifest.install
  if (spec.destination === undefined) throw new UnsupportedKindError('distribute-files needs a destination')
  const destination = underInstallRoot(context.installRoot, spec.destination)
  const options = { ...(spec.overwrite !== undefined ? { overwrite: spec.overwrite } : {}), ...(spec.fileMode !== undefined ? { fileMode: spec.fileMode } : {}) }
  if (ARCHIVE_KINDS.has(kind)) {
    const { entries, written, kept } = await extractArchive(packageFile, kind as ArchiveKind, destination, options)
    return { outcome: 'success', exitCode: 0, outputTail: '', message: `extracted ${entries} entries into ${spec.destination}: ${written} file(s) written${kept > 0 ? `, ${kept} existing kept` : ''}` }
  }
  const name = sanitizeFileName(manifest.package.fileName)
  const { written } = await placeFile(packageFile, destination, name, options)
  return { outcome: 'success', exitCode: 0, outputTail: '', message: written === 1 ? `copied ${name} into ${spec.destination}` : `kept the existing ${name} in ${spec.destination}` }
}

/** Extracts an archive into the work folder and runs its entry script. */
async function installArchive (manifest: Manifest, packageFile: string, context: InstallContext): Promise<InstallOutcome> {
  const entry = manifest.install.entry ?? 'install.sh'
  const extracted = join(context.workDir, 'extracted')
  await rm(extracted, { recursive: true, force: true })
  await extractArchive(packageFile, manifest.package.kind as ArchiveKind, extracted)
  if (!staysInside(extracted, entry)) throw new UnsupportedKindError(`the entry ${entry} is not inside the archive`)
  const script = join(extracted, entry)
  try {
    if (!(await stat(script)).isFile()) throw new Error('not a file')
  } catch {
    throw new UnsupportedKindError(`the archive has no entry script ${entry}`)
  }
  const runArgs = manifest.install.runArgs
  if (entry.endsWith('.sh')) return await run({ command: '/bin/sh', args: [script, ...runArgs] }, manifest, packageFile, context, extracted)
  await chmod(script, 0o700)
  return await run({ command: script, args: [...runArgs] }, manifest, packageFile, context, extracted)
}

/**
 * Installs or distributes a verified package file as its manifest says.
 * Every kind has its installer: msiexec, the exe, cmd for batch files,
 * PowerShell, macOS installer, dpkg, rpm, sh, archive extraction with an
 * entry script, a plain copy, or a capture package's changes with an undo journal. Installers of another platform are refused.
 */
export async function install (manifest: Manifest, packageFile: string, context: InstallContext): Promise<InstallOutcome> {
  const { kind } = manifest.package
  if (manifest.action === 'distribute-files') return await distribute(manifest, packageFile, context)
  if (manifest.action !== 'install') throw new UnsupportedKindError(`install() does not ${manifest.action}`)
  if (ARCHIVE_KINDS.has(kind)) return await installArchive(manifest, packageFile, context)
  if (kind === 'capture') return await installCapture(manifest, packageFile, context)
  if (kind === 'file') throw new UnsupportedKindError('a plain file has no installer; distribute it with the distribute-files action')
  checkPlatform(kind, context)
  if (kind === 'shell' || kind === 'exe') await chmod(packageFile, 0o700)
  if (kind === 'deb') await ensureDpkgDatabase(context.packageRoot)
  const logFile = kind === 'msi' ? join(context.workDir, 'msiexec.log') : undefined
  const line = installCommand({ kind, file: packageFile, runArgs: manifest.install.runArgs, packageRoot: context.packageRoot, ...(logFile !== undefined ? { logFile } : {}) })
  return await run(line, manifest, packageFile, context, context.workDir, logFile)
}
