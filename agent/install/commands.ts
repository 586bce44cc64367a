import type { LinuxPackageManager, PackageKind, Platform, RebootSpec } from '../../protocol/index.js'

/** A program and its arguments, run without a shell. */
export interface CommandLine {
  command: string
  args: string[]
  /**
   * Windows: the arguments are already quoted for cmd.exe and must be passed
   * as they are (spawn's windowsVerbatimArguments).
   */
  verbatim?: boolean
}

/** The Uninstall keys a Windows product registers itself under: 64-bit, 32-bit, and per user. */
export const UNINSTALL_KEYS = [
  'HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall',
  'HKLM\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall',
  'HKCU\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall'
] as const

/**
 * Quotes one argument the way the Microsoft C runtime splits command lines:
 * quotes around arguments with spaces, tabs or quotes, backslashes doubled
 * only before a quote.
 */
export function quoteWindowsArgument (argument: string): string {
  if (argument !== '' && !/[\s"]/.test(argument)) return argument
  let quoted = '"'
  let backslashes = 0
  for (const char of argument) {
    if (char === '\\') {
      backslashes++
      continue
    }
    if (char === '"') {
      quoted += '\\'.repeat(backslashes * 2 + 1) + '"'
    } else {
      quoted += '\\'.repeat(backslashes) + char
    }
    backslashes = 0
  }
  return quoted + '\\'.repeat(backslashes * 2) + '"'
}

/** `cmd.exe /d /s /c "…"`: runs a batch file or a command line string through cmd, quoted so that /s strips only the outer quotes. */
export function cmdCommand (line: string): CommandLine {
  return { command: 'cmd.exe', args: ['/d', '/s', '/c', `"${line}"`], verbatim: true }
}

export interface InstallCommandInput {
  kind: PackageKind
  /** The verified package file. */
  file: string
  /** The task's silent-install arguments. */
  runArgs: readonly string[]
  /** Linux package managers install under this root; '/' is the system itself. */
  packageRoot: string
  /** msiexec writes its verbose log here, for the failure message. */
  logFile?: string
}

function dpkgRoot (packageRoot: string): string[] {
  return packageRoot === '/' ? [] : [`--root=${packageRoot}`]
}

function rpmRoot (packageRoot: string): string[] {
  return packageRoot === '/' ? [] : ['--root', packageRoot]
}

/**
 * The command line that installs a package of each installer kind. Pure: the
 * Windows and macOS ones run only on those platforms, and tests check them
 * exactly.
 */
export function installCommand (input: InstallCommandInput): CommandLine {
  const { file, runArgs } = input
  switch (input.kind) {
    case 'msi':
      return { command: 'msiexec.exe', args: ['/i', file, '/qn', '/norestart', ...(input.logFile !== undefined ? ['/l*v', input.logFile] : []), ...runArgs] }
    case 'exe':
      return { command: file, args: [...runArgs] }
    case 'bat':
      return cmdCommand([file, ...runArgs].map(quoteWindowsArgument).join(' '))
    case 'ps1':
      return { command: 'powershell.exe', args: ['-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', file, ...runArgs] }
    case 'pkg':
      return { command: '/usr/sbin/installer', args: ['-pkg', file, '-target', '/', ...runArgs] }
    case 'deb':
      return { command: 'dpkg', args: [...dpkgRoot(input.packageRoot), ...runArgs, '--install', file] }
    case 'rpm':
      return { command: 'rpm', args: ['--upgrade', ...rpmRoot(input.packageRoot), ...runArgs, file] }
    case 'shell':
      return { command: '/bin/sh', args: [file, ...runArgs] }
    default:
      throw new TypeError(`a ${input.kind} package has no installer command`)
  }
}

/** `msiexec /x {code} /qn /norestart`. */
export function msiUninstallCommand (productCode: string, runArgs: readonly string[], logFile?: string): CommandLine {
  return { command: 'msiexec.exe', args: ['/x', productCode, '/qn', '/norestart', ...(logFile !== undefined ? ['/l*v', logFile] : []), ...runArgs] }
}

/** `dpkg -r` / `dpkg -P` or `rpm -e`. */
export function linuxPackageUninstallCommand (manager: LinuxPackageManager, name: string, packageRoot: string, purge = false, runArgs: readonly string[] = []): CommandLine {
  if (manager === 'dpkg') return { command: 'dpkg', args: [...dpkgRoot(packageRoot), ...runArgs, purge ? '--purge' : '--remove', name] }
  return { command: 'rpm', args: ['--erase', ...rpmRoot(packageRoot), ...runArgs, name] }
}

/** Asks dpkg or rpm whether a package is installed and at which version. */
export function linuxPackageQueryCommand (manager: LinuxPackageManager, name: string, packageRoot: string): CommandLine {
  if (manager === 'dpkg') {
    const admin = packageRoot === '/' ? [] : [`--admindir=${packageRoot.replace(/\/+$/, '')}/var/lib/dpkg`]
    return { command: 'dpkg-query', args: [...admin, '--show', '--showformat=${Status}\\t${Version}\\n', name] }
  }
  return { command: 'rpm', args: ['--query', ...rpmRoot(packageRoot), '--queryformat', '%{VERSION}-%{RELEASE}\\n', name] }
}

/** Lists an Uninstall key with all its products' values. */
export function registryQueryCommand (key: string): CommandLine {
  return { command: 'reg.exe', args: ['query', key, '/s'] }
}

export function pkgInfoCommand (packageId: string): CommandLine {
  return { command: '/usr/sbin/pkgutil', args: ['--pkg-info', packageId] }
}

export function pkgFilesCommand (packageId: string, only: 'files' | 'dirs'): CommandLine {
  return { command: '/usr/sbin/pkgutil', args: [only === 'files' ? '--only-files' : '--only-dirs', '--files', packageId] }
}

export function pkgForgetCommand (packageId: string): CommandLine {
  return { command: '/usr/sbin/pkgutil', args: ['--forget', packageId] }
}

/** An app's Info.plist as XML, whether it is stored as XML or binary. */
export function plistAsXmlCommand (plistPath: string): CommandLine {
  return { command: '/usr/bin/plutil', args: ['-convert', 'xml1', '-o', '-', plistPath] }
}

export interface RebootCommandInput {
  platform: Platform
  /** Seconds until the reboot; 0 now. */
  delaySeconds: number
  message: string
  /** Close applications that block the session (Windows /f). */
  forceCloseApps: boolean
}

/** The system's own reboot command: it warns logged-in users with the message and reboots at the deadline. */
export function rebootCommand (input: RebootCommandInput): CommandLine {
  const message = input.message.slice(0, 500)
  if (input.platform === 'windows') {
    return { command: 'shutdown.exe', args: ['/r', '/t', String(input.delaySeconds), '/c', message, '/d', 'p:4:2', ...(input.forceCloseApps ? ['/f'] : [])] }
  }
  const when = input.delaySeconds === 0 ? 'now' : `+${Math.ceil(input.delaySeconds / 60)}`
  return { command: input.platform === 'macos' ? '/sbin/shutdown' : 'shutdown', args: ['-r', when, message] }
}

/** Default reboot policy of a manifest without one. */
export const NO_REBOOT: RebootSpec = { policy: 'never' }
