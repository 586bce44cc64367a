import { execFile } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Compression } from './deb.js'
import { DESCRIPTION, HOMEPAGE, PACKAGE_NAME, RPM_ARCHITECTURES, SUMMARY } from './layout.js'
import { rpmScriptlets } from './maintainer-scripts.js'
import { parentFolders, writeTree, type TreeEntry } from './tree.js'

const run = promisify(execFile)

export function rpmArchitecture (arch: string): string {
  const rpm = RPM_ARCHITECTURES[arch]
  if (rpm === undefined) throw new RangeError(`no RPM architecture for ${arch}`)
  return rpm
}

export function rpmFileName (version: string, release: number, arch: string): string {
  return `${PACKAGE_NAME}-${version}-${release}.${rpmArchitecture(arch)}.rpm`
}

export interface RpmSpecInit {
  version: string
  release: number
  arch: string
  /** The tree the package installs, already written under `stageRoot`. */
  entries: readonly TreeEntry[]
  stageRoot: string
  license: string
}

/** Folders of the tree the package owns (its own, not the system's). */
function ownedFolders (entries: readonly TreeEntry[]): string[] {
  return [...entries.filter(entry => entry.type === 'directory').map(entry => entry.path), ...parentFolders(entries)]
    .filter(folder => folder.startsWith('/opt/meshdeploy-agent'))
    .sort()
}

/**
 * The spec of the agent's .rpm: the staged tree copied as it is (no strip,
 * no debug package, no build-id links: the executable is a Node binary with
 * the agent injected), requirements found from the binary's ELF headers,
 * scriptlets from maintainer-scripts.ts.
 */
export function renderRpmSpec (init: RpmSpecInit): string {
  const scriptlets = rpmScriptlets()
  const files = [
    ...ownedFolders(init.entries).map(folder => `%dir ${folder}`),
    ...init.entries.filter(entry => entry.type !== 'directory').map(entry => entry.type === 'symlink' ? entry.path : `%attr(${entry.mode.toString(8).padStart(4, '0')},root,root) ${entry.path}`)
  ]
  return `%global debug_package %{nil}
%global __os_install_post %{nil}
%global __arch_install_post %{nil}
%global __strip /bin/true
%global _build_id_links none

Name: ${PACKAGE_NAME}
Version: ${init.version}
Release: ${init.release}
Summary: ${SUMMARY}
License: ${init.license}
URL: ${HOMEPAGE}
BuildArch: ${rpmArchitecture(init.arch)}
AutoProv: no
AutoReq: yes
Requires(pre): /usr/sbin/useradd
Requires(post): /usr/bin/install

%description
${DESCRIPTION.join('\n')}

%install
mkdir -p %{buildroot}
cp -a '${init.stageRoot}/.' %{buildroot}/

%files
${files.join('\n')}

%pre
${scriptlets.pre}
%post
${scriptlets.post}
%preun
${scriptlets.preun}
%postun
${scriptlets.postun}
`
}

export interface BuildRpmInit {
  workDir: string
  entries: readonly TreeEntry[]
  outDir: string
  version: string
  release: number
  arch: string
  license: string
  compression: Compression
}

/** Stages the tree and builds the .rpm with rpmbuild; answers the file it wrote. */
export async function buildRpm (init: BuildRpmInit): Promise<string> {
  const stageRoot = join(init.workDir, 'stage')
  await writeTree(stageRoot, init.entries)
  const topDir = join(init.workDir, 'rpmbuild')
  for (const folder of ['BUILD', 'SPECS', 'RPMS', 'SRPMS', 'SOURCES', 'BUILDROOT']) await mkdir(join(topDir, folder), { recursive: true })
  const spec = join(topDir, 'SPECS', `${PACKAGE_NAME}.spec`)
  await writeFile(spec, renderRpmSpec({ version: init.version, release: init.release, arch: init.arch, entries: init.entries, stageRoot, license: init.license }))
  const payload = init.compression === 'best' ? 'w6T.xzdio' : 'w1.gzdio'
  await run('rpmbuild', [
    '-bb', '--quiet',
    '--define', `_topdir ${topDir}`,
    '--define', `_rpmdir ${init.outDir}`,
    '--define', '_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm',
    '--define', `_binary_payload ${payload}`,
    '--buildroot', join(topDir, 'BUILDROOT', 'root'),
    spec
  ], { maxBuffer: 16 * 1024 * 1024 })
  return join(init.outDir, rpmFileName(init.version, init.release, init.arch))
}
