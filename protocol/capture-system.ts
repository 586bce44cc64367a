import type { RequiredPackage } from './capture.js'

/** What /etc/os-release says about a Linux system. */
export interface OsRelease {
  /** ID: debian, ubuntu, rhel, … ('linux' when the file is missing). */
  id: string
  /** ID_LIKE, split. */
  idLike: string[]
  /** VERSION_ID ('' when absent: rolling releases). */
  versionId: string
}

/** Reads os-release text (KEY=value lines, values optionally quoted). */
export function parseOsRelease (text: string): OsRelease {
  const values = new Map<string, string>()
  for (const line of text.split(/\r?\n/)) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim())
    if (match === null) continue
    let value = match[2].trim()
    if (/^(["']).*\1$/.test(value)) value = value.slice(1, -1).replace(/\\(["'$`\\])/g, '$1')
    values.set(match[1], value)
  }
  const id = (values.get('ID') ?? 'linux').toLowerCase()
  const idLike = (values.get('ID_LIKE') ?? '').toLowerCase().split(/\s+/).filter(part => part !== '')
  return { id, idLike, versionId: values.get('VERSION_ID') ?? '' }
}

/** Families whose members share package formats and file-system layout. */
const FAMILIES: ReadonlyArray<[family: string, members: readonly string[]]> = [
  ['debian', ['debian', 'ubuntu', 'raspbian', 'linuxmint', 'pop', 'kali', 'devuan']],
  ['rhel', ['rhel', 'fedora', 'centos', 'rocky', 'almalinux', 'ol', 'amzn', 'scientific']],
  ['suse', ['suse', 'opensuse', 'sles', 'sled', 'opensuse-leap', 'opensuse-tumbleweed']],
  ['arch', ['arch', 'manjaro', 'endeavouros']],
  ['alpine', ['alpine']]
]

/** The distribution family of an os-release: debian, rhel, suse, arch, alpine, or the ID itself. */
export function distributionFamily (release: OsRelease): string {
  for (const candidate of [release.id, ...release.idLike]) {
    for (const [family, members] of FAMILIES) if (members.includes(candidate)) return family
  }
  return release.id
}

/** An installed system package. */
export interface InstalledPackage {
  name: string
  version: string
  arch: string
}

/** The dpkg-query format that `parseDpkgList` reads. */
export const DPKG_LIST_FORMAT = '${binary:Package}\\t${Version}\\t${Architecture}\\t${db:Status-Status}\\n'
/** The rpm query format that `parseRpmList` reads. */
export const RPM_LIST_FORMAT = '%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n'

/** Installed packages from `dpkg-query -W -f DPKG_LIST_FORMAT`; half-installed and removed ones are left out. */
export function parseDpkgList (text: string): InstalledPackage[] {
  const packages: InstalledPackage[] = []
  for (const line of text.split('\n')) {
    const [name, version, arch, status] = line.split('\t')
    if (name === undefined || version === undefined || version === '' || status?.trim() !== 'installed') continue
    packages.push({ name: name.replace(/:[a-z0-9]+$/, ''), version, arch: arch ?? '' })
  }
  return sortPackages(packages)
}

/** Installed packages from `rpm -qa --qf RPM_LIST_FORMAT` (gpg-pubkey pseudo-packages left out). */
export function parseRpmList (text: string): InstalledPackage[] {
  const packages: InstalledPackage[] = []
  for (const line of text.split('\n')) {
    const [name, version, arch] = line.split('\t')
    if (name === undefined || name === '' || name === 'gpg-pubkey' || version === undefined) continue
    packages.push({ name, version, arch: arch ?? '' })
  }
  return sortPackages(packages)
}

function sortPackages (packages: InstalledPackage[]): InstalledPackage[] {
  return packages.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : a.arch < b.arch ? -1 : a.arch > b.arch ? 1 : 0)
}

export interface PackageListDiff {
  added: InstalledPackage[]
  removed: InstalledPackage[]
  upgraded: Array<{ name: string, arch: string, from: string, to: string }>
}

/** What changed between two lists of installed packages (by name and architecture). */
export function diffPackageLists (before: readonly InstalledPackage[], after: readonly InstalledPackage[]): PackageListDiff {
  const key = (pkg: InstalledPackage): string => `${pkg.name}\t${pkg.arch}`
  const old = new Map(before.map(pkg => [key(pkg), pkg]))
  const now = new Map(after.map(pkg => [key(pkg), pkg]))
  const diff: PackageListDiff = { added: [], removed: [], upgraded: [] }
  for (const pkg of after) {
    const previous = old.get(key(pkg))
    if (previous === undefined) diff.added.push(pkg)
    else if (previous.version !== pkg.version) diff.upgraded.push({ name: pkg.name, arch: pkg.arch, from: previous.version, to: pkg.version })
  }
  for (const pkg of before) if (!now.has(key(pkg))) diff.removed.push(pkg)
  return diff
}

/** The packages a captured change needs: those installed or upgraded between the snapshots. */
export function requiredPackagesOf (diff: PackageListDiff, manager: 'dpkg' | 'rpm'): RequiredPackage[] {
  return [
    ...diff.added.map(pkg => ({ manager, name: pkg.name, version: pkg.version, ...(pkg.arch !== '' ? { arch: pkg.arch } : {}) })),
    ...diff.upgraded.map(pkg => ({ manager, name: pkg.name, version: pkg.to, ...(pkg.arch !== '' ? { arch: pkg.arch } : {}) }))
  ].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
}

/** Which required packages a device lacks (by name, and by architecture where the package names one other than all/noarch). */
export function missingPackages (required: readonly RequiredPackage[], installed: readonly InstalledPackage[]): RequiredPackage[] {
  const portable = new Set(['all', 'noarch', ''])
  return required.filter(pkg => !installed.some(have => have.name === pkg.name && (pkg.arch === undefined || portable.has(pkg.arch) || portable.has(have.arch) || have.arch === pkg.arch)))
}
