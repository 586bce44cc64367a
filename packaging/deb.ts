import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { DEB_ARCHITECTURES, DESCRIPTION, HOMEPAGE, MAINTAINER, PACKAGE_NAME, SUMMARY } from './layout.js'
import { debianMaintainerScripts } from './maintainer-scripts.js'
import { writeTree, type TreeEntry } from './tree.js'

const run = promisify(execFile)

/** How hard the packages are compressed: `best` for what ships (xz), `fast` for tests (gzip -1). */
export type Compression = 'best' | 'fast'

/**
 * What the executable links against: glibc 2.28 and the C++ runtime of GCC
 * 10 (Node 20's own requirements); useradd creates the agent's user.
 */
export const DEB_DEPENDS = 'libc6 (>= 2.28), libstdc++6 (>= 10), libgcc-s1 | libgcc1, passwd'

export interface DebControlInit {
  version: string
  revision: number
  /** Node's name of the architecture (x64, arm64). */
  arch: string
  installedSizeKiB: number
}

export function debArchitecture (arch: string): string {
  const deb = DEB_ARCHITECTURES[arch]
  if (deb === undefined) throw new RangeError(`no Debian architecture for ${arch}`)
  return deb
}

export function debVersion (version: string, revision: number): string {
  return `${version}-${revision}`
}

export function debFileName (version: string, revision: number, arch: string): string {
  return `${PACKAGE_NAME}_${debVersion(version, revision)}_${debArchitecture(arch)}.deb`
}

/** The control file of the agent's .deb. */
export function renderDebControl (init: DebControlInit): string {
  return [
    `Package: ${PACKAGE_NAME}`,
    `Version: ${debVersion(init.version, init.revision)}`,
    `Architecture: ${debArchitecture(init.arch)}`,
    `Maintainer: ${MAINTAINER}`,
    `Installed-Size: ${init.installedSizeKiB}`,
    `Depends: ${DEB_DEPENDS}`,
    'Section: admin',
    'Priority: optional',
    `Homepage: ${HOMEPAGE}`,
    `Description: ${SUMMARY}`,
    ...DESCRIPTION.map(line => ` ${line}`)
  ].join('\n') + '\n'
}

async function md5Of (file: string): Promise<string> {
  const hash = createHash('md5')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

export interface BuildDebInit {
  /** An empty folder to assemble the package in. */
  workDir: string
  entries: readonly TreeEntry[]
  outFile: string
  control: DebControlInit
  compression: Compression
}

/** Assembles the tree, its control file, md5sums and maintainer scripts, and builds the .deb with dpkg-deb (files owned by root). */
export async function buildDeb (init: BuildDebInit): Promise<string> {
  await writeTree(init.workDir, init.entries)
  const control = join(init.workDir, 'DEBIAN')
  await mkdir(control, { recursive: true, mode: 0o755 })
  await writeFile(join(control, 'control'), renderDebControl(init.control), { mode: 0o644 })
  const sums: string[] = []
  for (const entry of init.entries) {
    if (entry.type === 'file' || entry.type === 'text') sums.push(`${await md5Of(join(init.workDir, entry.path))}  ${entry.path.replace(/^\//, '')}`)
  }
  await writeFile(join(control, 'md5sums'), sums.join('\n') + '\n', { mode: 0o644 })
  for (const [name, text] of Object.entries(debianMaintainerScripts())) await writeFile(join(control, name), text, { mode: 0o755 })
  const compression = init.compression === 'best' ? ['-Zxz', '-z6'] : ['-Zgzip', '-z1']
  await run('dpkg-deb', ['--root-owner-group', ...compression, '--build', init.workDir, init.outFile], { maxBuffer: 4 * 1024 * 1024 })
  return init.outFile
}
