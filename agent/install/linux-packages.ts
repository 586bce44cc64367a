import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
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

/**
 * Prepares dpkg's database under a private root (`dpkg --root`), as a fresh
 * system has it: an empty status file and the folders dpkg expects. The
 * system's own root ('/') is never touched.
 */
export async function ensureDpkgDatabase (packageRoot: string): Promise<void> {
  if (packageRoot === '/') return
  const admin = join(packageRoot, 'var', 'lib', 'dpkg')
  for (const folder of ['info', 'updates', 'triggers', 'alternatives']) await mkdir(join(admin, folder), { recursive: true })
  for (const file of ['status', 'available']) {
    try {
      await writeFile(join(admin, file), '', { flag: 'wx' })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
  }
}
