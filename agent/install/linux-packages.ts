import type { LinuxPackageManager } from '../../protocol/index.js'

export interface LinuxPackageState {
  installed: boolean
  version?: string
}

/**
 * Reads the answer of the package query: dpkg-query prints
 * `install ok installed<TAB>1.2-1` (a removed package keeps a
 * `deinstall ok config-files` line); rpm prints the version, or exits 1.
 */
export function parsePackageQuery (manager: LinuxPackageManager, exitCode: number | null, output: string): LinuxPackageState {
  if (exitCode !== 0) return { installed: false }
  const line = output.split(/\r?\n/).find(candidate => candidate.trim() !== '') ?? ''
  if (manager === 'dpkg') {
    const [status, version] = line.split('\t')
    const installed = /\binstalled$/.test(status?.trim() ?? '') && !/config-files|not-installed/.test(status ?? '')
    return installed && version !== undefined && version.trim() !== '' ? { installed, version: version.trim() } : { installed }
  }
  if (/is not installed/.test(line)) return { installed: false }
  return { installed: true, version: line.trim() }
}
