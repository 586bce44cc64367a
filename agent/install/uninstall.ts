import { lstat, readdir, rm, rmdir } from 'node:fs/promises'
import { join } from 'node:path'
import { sanitizeFileName, type Manifest, type UninstallSpec } from '../../protocol/index.js'
import { listArchive, type ArchiveKind } from './archive.js'
import { removeEntries } from './distribute.js'
import { underInstallRoot } from './paths.js'
import {
  linuxPackageUninstallCommand, msiUninstallCommand, pkgFilesCommand, pkgForgetCommand, pkgInfoCommand, type CommandLine
} from './commands.js'
import { runInstaller, type InstallOutcome } from './run.js'
import { runProcess } from './process.js'
import { ARCHIVE_KINDS, UnsupportedKindError, environmentFor, type InstallContext } from './installer.js'
import { registryEntries } from './detection.js'
import { findProducts, quietUninstallCommand } from './windows.js'
import { parsePkgFiles, parsePkgInfo } from './macos.js'
import { currentPlatform } from '../platform.js'
import { ensureDpkgDatabase } from './linux-packages.js'
import { undoCapture } from './capture/index.js'

const NEEDS: Partial<Record<UninstallSpec['type'], string>> = { msi: 'windows', 'windows-registry': 'windows', 'macos-pkgutil': 'macos', 'linux-package': 'linux' }

function done (message: string): InstallOutcome {
  return { outcome: 'success', exitCode: 0, outputTail: '', message }
}

async function runUninstaller (line: CommandLine, manifest: Manifest, context: InstallContext, logFile?: string): Promise<InstallOutcome> {
  return await runInstaller({
    line,
    cwd: context.workDir,
    env: environmentFor(manifest, undefined, context),
    timeoutSeconds: manifest.install.timeoutSeconds,
    what: 'the uninstaller',
    ...(manifest.install.exitCodes !== undefined ? { exitCodes: manifest.install.exitCodes } : {}),
    ...(logFile !== undefined ? { logFile } : {}),
    ...(context.signal !== undefined ? { signal: context.signal } : {})
  })
}

async function capture (line: CommandLine, context: InstallContext): Promise<{ exitCode: number | null, stdout: string }> {
  const result = await runProcess({ command: line.command, args: line.args, cwd: context.workDir, timeoutMs: 120_000, captureStdout: true, ...(context.signal !== undefined ? { signal: context.signal } : {}) })
  return { exitCode: result.exitCode, stdout: result.stdout ?? '' }
}

/** macOS: removes the files of a package receipt, the folders it leaves empty, then forgets the receipt. */
async function removeReceipt (packageId: string, context: InstallContext): Promise<InstallOutcome> {
  const info = await capture(pkgInfoCommand(packageId), context)
  const receipt = info.exitCode === 0 ? parsePkgInfo(info.stdout) : undefined
  if (receipt === undefined) return done(`no package receipt for ${packageId}; nothing to remove`)
  const base = join(receipt.volume, receipt.location)
  const files = parsePkgFiles((await capture(pkgFilesCommand(packageId, 'files'), context)).stdout)
  const folders = parsePkgFiles((await capture(pkgFilesCommand(packageId, 'dirs'), context)).stdout)
  let removed = 0
  for (const file of files) {
    const target = join(base, file)
    if ((await lstat(target).catch(() => undefined)) === undefined) continue
    await rm(target, { force: true })
    removed++
  }
  // Folders the receipt lists are shared with other software (/Applications, /Library): only empty ones go.
  for (const folder of folders.sort((a, b) => b.length - a.length)) {
    const target = join(base, folder)
    try {
      if ((await readdir(target)).length === 0) await rmdir(target)
    } catch {}
  }
  const forget = await capture(pkgForgetCommand(packageId), context)
  if (forget.exitCode !== 0) return { outcome: 'failure', exitCode: forget.exitCode, outputTail: forget.stdout.slice(-2000), message: `removed ${removed} file(s) but pkgutil --forget ${packageId} exited ${forget.exitCode}` }
  return done(`removed ${removed} file(s) of ${packageId} ${receipt.version} and forgot its receipt`)
}

/**
 * Removes software as its uninstall spec says. Only `distributed-files`
 * needs the package file (to know what it put where); every other spec runs
 * without content.
 */
export async function uninstall (manifest: Manifest, packageFile: string | undefined, context: InstallContext): Promise<InstallOutcome> {
  const spec = manifest.install.uninstall
  if (spec === undefined) throw new UnsupportedKindError('the manifest has no uninstall spec')
  const platform = context.platform ?? currentPlatform()
  const needed = NEEDS[spec.type]
  if (needed !== undefined && needed !== platform) throw new UnsupportedKindError(`a ${spec.type} uninstall runs on ${needed} only; this device runs ${platform}`)
  const runArgs = manifest.install.runArgs
  switch (spec.type) {
    case 'msi': {
      const logFile = join(context.workDir, 'msiexec.log')
      return await runUninstaller(msiUninstallCommand(spec.productCode, runArgs, logFile), manifest, context, logFile)
    }
    case 'windows-registry': {
      const [entry] = findProducts(await registryEntries({ installRoot: context.installRoot, packageRoot: context.packageRoot, platform }), spec.displayName, spec.publisher)
      if (entry === undefined) return done(`${spec.displayName} is not in the Uninstall keys; nothing to remove`)
      let line: CommandLine
      try {
        line = quietUninstallCommand(entry, runArgs)
      } catch (error) {
        throw new UnsupportedKindError((error as Error).message)
      }
      return await runUninstaller(line, manifest, context)
    }
    case 'macos-pkgutil':
      return await removeReceipt(spec.packageId, context)
    case 'linux-package':
      if (spec.manager === 'dpkg') await ensureDpkgDatabase(context.packageRoot)
      return await runUninstaller(linuxPackageUninstallCommand(spec.manager, spec.name, context.packageRoot, spec.purge ?? false, runArgs), manifest, context)
    case 'command': {
      const [command, ...args] = spec.command
      return await runUninstaller({ command, args: [...args, ...runArgs] }, manifest, context)
    }
    case 'files': {
      let removed = 0
      for (const path of spec.paths) {
        const target = underInstallRoot(context.installRoot, path)
        if (target === context.installRoot) throw new UnsupportedKindError('refusing to remove the install root')
        if ((await lstat(target).catch(() => undefined)) === undefined) continue
        await rm(target, { recursive: true, force: true })
        removed++
      }
      return done(`removed ${removed} of ${spec.paths.length} path(s)`)
    }
    case 'capture':
      return await undoCapture(manifest, context)
    case 'distributed-files': {
      if (packageFile === undefined) throw new UnsupportedKindError('removing distributed files needs the package content')
      const destination = underInstallRoot(context.installRoot, spec.destination)
      const kind = manifest.package.kind
      const entries = ARCHIVE_KINDS.has(kind) ? await listArchive(packageFile, kind as ArchiveKind, destination) : [sanitizeFileName(manifest.package.fileName)]
      const { removed, missing } = await removeEntries(destination, entries)
      return done(`removed ${removed} distributed file(s) from ${spec.destination}${missing > 0 ? ` (${missing} already gone)` : ''}`)
    }
  }
}
