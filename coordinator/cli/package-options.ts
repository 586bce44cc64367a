import type { Command } from 'commander'
import { parseExitCodeMap, type DetectionRule, type UninstallSpec } from '../../protocol/index.js'
import { list, UsageError } from './context.js'

function collect (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/** Options that describe how a package is detected, removed and judged; shared by `package add` and `package edit`. */
export function withPackageOptions (command: Command): Command {
  return command
    .option('--description <text>', 'description (remarks)')
    .option('--publisher <name>', 'publisher')
    .option('--kind <kind>', 'override the detected kind: msi, exe, bat, ps1, pkg, deb, rpm, shell, tar, tar.gz, zip, file')
    .option('--platform <platform>', 'override the detected platform: windows, macos, linux, any')
    .option('--arch <arch>', 'architecture: x64, arm64, any')
    .option('--self-service', 'approve for self-service: devices may request it')
    .option('--exit-code <code=outcome>', 'map an exit code (repeatable): success, success-reboot-required, success-reboot-started, retry, failure', collect)
    .option('--detect-file <path>', 'detection: this absolute path exists')
    .option('--detect-sha256 <hex>', 'with --detect-file: and has this SHA-256')
    .option('--detect-command <command...>', 'detection: this command exits 0')
    .option('--detect-registry <display-name>', 'detection (Windows): a product of this name in the Uninstall keys')
    .option('--detect-publisher <publisher>', 'with --detect-registry: and of this publisher')
    .option('--detect-bundle <bundle-id>', 'detection (macOS): a pkgutil receipt with this id')
    .option('--detect-app <path>', 'with --detect-bundle: the app bundle whose Info.plist names the id, instead of a receipt')
    .option('--detect-package <name>', 'detection (Linux): this package is installed')
    .option('--detect-manager <manager>', 'with --detect-package: dpkg or rpm', 'dpkg')
    .option('--detect-version <version>', 'with --detect-registry, --detect-bundle or --detect-package: at exactly this version')
    .option('--uninstall-msi <product-code>', 'uninstall: msiexec /x {product code} /qn')
    .option('--uninstall-registry <display-name>', 'uninstall (Windows): run the QuietUninstallString of this product')
    .option('--uninstall-publisher <publisher>', 'with --uninstall-registry: of this publisher')
    .option('--uninstall-pkgutil <package-id>', 'uninstall (macOS): remove the receipt\'s files, then pkgutil --forget')
    .option('--uninstall-package <name>', 'uninstall (Linux): dpkg -r or rpm -e this package')
    .option('--uninstall-manager <manager>', 'with --uninstall-package: dpkg or rpm', 'dpkg')
    .option('--uninstall-purge', 'with --uninstall-package and dpkg: purge configuration files too')
    .option('--uninstall-command <command...>', 'uninstall: run this command')
    .option('--uninstall-files <paths>', 'uninstall: remove these absolute paths, comma separated', list)
    .option('--uninstall-distributed <folder>', 'uninstall: remove what distributing the package put into this folder')
    .option('--depends-on <packages>', 'install these first where missing: package ids (or unique prefixes), or NAME or NAME>=VERSION (the newest that fits), comma separated', list)
    .option('--supersedes <id:mode>', 'supersede an older package (repeatable): its id (or a unique prefix), then :upgrade (install over it, the default) or :replace (remove it first)', collect)
}

/** `NAME>=1.2`, `NAME` or a package id (prefix) → a dependency reference; prefixes are resolved by the caller. */
export function parseDependency (text: string): { packageId: string } | { name: string, minVersion?: string } {
  const at = text.indexOf('>=')
  if (at >= 0) {
    const name = text.slice(0, at).trim()
    const minVersion = text.slice(at + 2).trim()
    if (name === '' || minVersion === '') throw new UsageError(`${text}: write NAME>=VERSION`)
    return { name, minVersion }
  }
  return /^[0-9a-f]{8,64}$/.test(text.trim()) ? { packageId: text.trim() } : { name: text.trim() }
}

/** `ID`, `ID:upgrade` or `ID:replace`. */
export function parseSupersedes (text: string): { packageId: string, mode: 'upgrade' | 'replace' } {
  const [packageId, mode = 'upgrade'] = text.split(':').map(part => part.trim())
  if (mode !== 'upgrade' && mode !== 'replace') throw new UsageError(`${text}: the mode is upgrade or replace`)
  if (!/^[0-9a-f]{4,64}$/.test(packageId)) throw new UsageError(`${text}: give a package id or a unique prefix of one`)
  return { packageId, mode }
}

/** The detection rule the options describe, if any. */
export function detectionFrom (options: Record<string, any>): DetectionRule | undefined {
  const given = ['detectFile', 'detectCommand', 'detectRegistry', 'detectBundle', 'detectPackage'].filter(key => options[key] !== undefined)
  if (given.length > 1) throw new UsageError('give one detection rule: --detect-file, --detect-command, --detect-registry, --detect-bundle or --detect-package')
  const version = options.detectVersion !== undefined ? { version: options.detectVersion as string } : {}
  if (options.detectFile !== undefined) return { type: 'file', path: options.detectFile, ...(options.detectSha256 !== undefined ? { sha256: options.detectSha256 } : {}) }
  if (options.detectCommand !== undefined) return { type: 'command', command: options.detectCommand }
  if (options.detectRegistry !== undefined) return { type: 'windows-registry', displayName: options.detectRegistry, ...(options.detectPublisher !== undefined ? { publisher: options.detectPublisher } : {}), ...version }
  if (options.detectBundle !== undefined) return { type: 'macos-bundle', bundleId: options.detectBundle, ...(options.detectApp !== undefined ? { appPath: options.detectApp } : {}), ...version }
  if (options.detectPackage !== undefined) return { type: 'linux-package', manager: options.detectManager, name: options.detectPackage, ...version }
  return undefined
}

/** The uninstall spec the options describe, if any. */
export function uninstallFrom (options: Record<string, any>): UninstallSpec | undefined {
  const given = ['uninstallMsi', 'uninstallRegistry', 'uninstallPkgutil', 'uninstallPackage', 'uninstallCommand', 'uninstallFiles', 'uninstallDistributed'].filter(key => options[key] !== undefined)
  if (given.length > 1) throw new UsageError('give one uninstall spec')
  if (options.uninstallMsi !== undefined) return { type: 'msi', productCode: options.uninstallMsi }
  if (options.uninstallRegistry !== undefined) return { type: 'windows-registry', displayName: options.uninstallRegistry, ...(options.uninstallPublisher !== undefined ? { publisher: options.uninstallPublisher } : {}) }
  if (options.uninstallPkgutil !== undefined) return { type: 'macos-pkgutil', packageId: options.uninstallPkgutil }
  if (options.uninstallPackage !== undefined) return { type: 'linux-package', manager: options.uninstallManager, name: options.uninstallPackage, ...(options.uninstallPurge === true ? { purge: true } : {}) }
  if (options.uninstallCommand !== undefined) return { type: 'command', command: options.uninstallCommand }
  if (options.uninstallFiles !== undefined) return { type: 'files', paths: options.uninstallFiles }
  if (options.uninstallDistributed !== undefined) return { type: 'distributed-files', destination: options.uninstallDistributed }
  return undefined
}

/** The metadata fields the options set (for an upload or a PATCH). */
export function packageFieldsFrom (options: Record<string, any>): Record<string, unknown> {
  const fields: Record<string, unknown> = {}
  for (const key of ['description', 'publisher', 'kind', 'platform', 'arch'] as const) if (options[key] !== undefined) fields[key] = options[key]
  if (options.selfService !== undefined) fields.selfService = options.selfService === true
  if (options.exitCode !== undefined) {
    try {
      fields.exitCodes = parseExitCodeMap(options.exitCode)
    } catch (error) {
      throw new UsageError((error as Error).message)
    }
  }
  const detection = detectionFrom(options)
  if (detection !== undefined) fields.detection = detection
  const uninstall = uninstallFrom(options)
  if (uninstall !== undefined) fields.uninstall = uninstall
  if (Array.isArray(options.dependsOn)) fields.dependsOn = options.dependsOn.map(parseDependency)
  if (Array.isArray(options.supersedes)) fields.supersedes = options.supersedes.map(parseSupersedes)
  return fields
}
