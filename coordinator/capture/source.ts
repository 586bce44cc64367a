import { execFile } from 'node:child_process'
import { access, readFile } from 'node:fs/promises'
import { hostname, release } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import {
  DPKG_LIST_FORMAT, RPM_LIST_FORMAT, distributionFamily, parseDpkgList, parseOsRelease, parseRpmList,
  type Architecture, type CaptureSource, type InstalledPackage
} from '../../protocol/index.js'

const run = promisify(execFile)

function architecture (): Architecture {
  return process.arch === 'x64' ? 'x64' : process.arch === 'arm64' ? 'arm64' : 'any'
}

async function exists (path: string): Promise<boolean> {
  return await access(path).then(() => true, () => false)
}

/** Which package database the system under `rootDir` has. */
async function packageManagerOf (rootDir: string): Promise<CaptureSource['packageManager']> {
  if (await exists(join(rootDir, 'var/lib/dpkg/status'))) return 'dpkg'
  if (await exists(join(rootDir, 'var/lib/rpm'))) return 'rpm'
  return 'none'
}

/**
 * The OS, distribution, version and architecture of the system under
 * `rootDir` ('/' for this machine). A folder without an os-release of its own
 * (an application tree rather than a system image) is taken to be of the
 * running system.
 */
export async function describeSource (rootDir: string): Promise<CaptureSource> {
  let text: string | undefined
  for (const folder of rootDir === '/' ? ['/'] : [rootDir, '/']) {
    for (const path of ['etc/os-release', 'usr/lib/os-release']) {
      text ??= await readFile(join(folder, path), 'utf8').catch(() => undefined)
    }
  }
  const osRelease = parseOsRelease(text ?? '')
  const source: CaptureSource = {
    os: 'linux',
    distribution: osRelease.id,
    family: distributionFamily(osRelease),
    distributionVersion: osRelease.versionId,
    arch: architecture(),
    packageManager: await packageManagerOf(rootDir)
  }
  if (rootDir === '/') {
    source.hostname = hostname().slice(0, 200)
    source.kernel = release().slice(0, 200)
  }
  return source
}

/** The installed system packages of the system under `rootDir`, from its own database. */
export async function listInstalledPackages (manager: CaptureSource['packageManager'], rootDir: string): Promise<InstalledPackage[]> {
  if (manager === 'none') return []
  try {
    if (manager === 'dpkg') {
      const { stdout } = await run('dpkg-query', ['--admindir', join(rootDir, 'var/lib/dpkg'), '-W', '-f', DPKG_LIST_FORMAT], { maxBuffer: 256 * 1024 * 1024 })
      return parseDpkgList(stdout)
    }
    const { stdout } = await run('rpm', ['--root', rootDir, '-qa', '--qf', RPM_LIST_FORMAT], { maxBuffer: 256 * 1024 * 1024 })
    return parseRpmList(stdout)
  } catch (error) {
    throw new Error(`the ${manager} package list cannot be read: ${(error as Error).message}`)
  }
}
