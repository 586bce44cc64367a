import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  DPKG_LIST_FORMAT, RPM_LIST_FORMAT, distributionFamily, parseDpkgList, parseOsRelease, parseRpmList,
  type Architecture, type CaptureSource, type InstalledPackage, type OsRelease
} from '../../../protocol/index.js'
import { currentArch, currentPlatform } from '../../platform.js'
import { runProcess } from '../process.js'

/** What a capture package is checked against: this device's OS, distribution and architecture. */
export interface DeviceFacts {
  os: 'linux' | 'windows' | 'macos' | 'any'
  release: OsRelease
  family: string
  arch: Architecture
}

/** Reads the device's os-release (the system's, not the install root's: the device is what runs the software). */
export async function deviceFacts (): Promise<DeviceFacts> {
  let text = ''
  for (const path of ['/etc/os-release', '/usr/lib/os-release']) {
    try {
      text = await readFile(path, 'utf8')
      break
    } catch {}
  }
  const release = parseOsRelease(text)
  return { os: currentPlatform(), release, family: distributionFamily(release), arch: currentArch() }
}

/** Why a capture taken on `source` cannot be applied on this device, or undefined. */
export function captureApplicabilityProblem (source: CaptureSource, device: DeviceFacts): string | undefined {
  if (source.os !== device.os) return `captured on ${source.os}; this device runs ${device.os}`
  if (source.arch !== 'any' && source.arch !== device.arch) return `captured on ${source.arch}; this device is ${device.arch}`
  if (source.family !== device.family) return `captured on ${source.distribution} ${source.distributionVersion} (${source.family} family); this device runs ${device.release.id} ${device.release.versionId} (${device.family} family)`
  return undefined
}

/** Installed system packages under a package root: dpkg's or rpm's list, or undefined when neither is there. */
export async function installedPackages (manager: 'dpkg' | 'rpm', packageRoot: string, signal?: AbortSignal): Promise<InstalledPackage[] | undefined> {
  const args = manager === 'dpkg'
    ? [...(packageRoot !== '/' ? ['--admindir', join(packageRoot, 'var', 'lib', 'dpkg')] : []), '-W', '-f', DPKG_LIST_FORMAT]
    : [...(packageRoot !== '/' ? ['--root', packageRoot] : []), '-qa', '--qf', RPM_LIST_FORMAT]
  try {
    const result = await runProcess({ command: manager === 'dpkg' ? 'dpkg-query' : 'rpm', args, cwd: '/', timeoutMs: 120_000, captureStdout: true, ...(signal !== undefined ? { signal } : {}) })
    if (result.exitCode !== 0) return manager === 'dpkg' ? [] : undefined
    return manager === 'dpkg' ? parseDpkgList(result.stdout ?? '') : parseRpmList(result.stdout ?? '')
  } catch {
    return undefined
  }
}

/** User and group names of this device, to give files the owner they had on the reference machine even where its ids differ. */
export interface OwnerNames {
  users: Map<string, number>
  groups: Map<string, number>
}

function parseIds (text: string): Map<string, number> {
  const ids = new Map<string, number>()
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':')
    if (name !== undefined && name !== '' && id !== undefined && /^\d+$/.test(id)) ids.set(name, Number(id))
  }
  return ids
}

export async function ownerNames (): Promise<OwnerNames> {
  const read = async (path: string): Promise<string> => await readFile(path, 'utf8').catch(() => '')
  return { users: parseIds(await read('/etc/passwd')), groups: parseIds(await read('/etc/group')) }
}

/** The uid and gid to give a captured entry: its owner's name where this device knows it, else the captured ids. */
export function ownerOf (entry: { uid?: number, gid?: number, user?: string, group?: string }, names: OwnerNames): { uid: number, gid: number } {
  return {
    uid: (entry.user !== undefined ? names.users.get(entry.user) : undefined) ?? entry.uid ?? 0,
    gid: (entry.group !== undefined ? names.groups.get(entry.group) : undefined) ?? entry.gid ?? 0
  }
}
