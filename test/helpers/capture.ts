import { createHash, randomBytes } from 'node:crypto'
import { chmod, lstat, mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'
import { finishCapture, startCapture as startSnapshot } from '../../coordinator/capture/package.js'
import type { StateHeader } from '../../coordinator/capture/snapshot.js'
import { DEFAULT_EXCLUDES } from '../../coordinator/capture/excludes.js'
import type { CaptureSource } from '../../protocol/index.js'

/** What a tree holds, path by path: type, mode, owner, content hash, link target. */
export type TreeState = Record<string, string>

/** Every entry under `root` with its type, mode, owner and content hash (or link target), for comparing trees exactly. */
export async function treeState (root: string): Promise<TreeState> {
  const state: TreeState = {}
  async function walk (folder: string, prefix: string): Promise<void> {
    for (const name of (await readdir(folder)).sort()) {
      const path = join(folder, name)
      const info = await lstat(path)
      const meta = `${(info.mode & 0o7777).toString(8)} ${info.uid}:${info.gid}`
      if (info.isDirectory()) {
        state[`${prefix}/${name}`] = `dir ${meta}`
        await walk(path, `${prefix}/${name}`)
      } else if (info.isSymbolicLink()) {
        state[`${prefix}/${name}`] = `link ${await readlink(path)}`
      } else {
        state[`${prefix}/${name}`] = `file ${meta} ${createHash('sha256').update(await readFile(path)).digest('hex')}`
      }
    }
  }
  await walk(root, '')
  return state
}

/** Content of the larger library, so that a small file system fills up on it. */
export const LARGE_LIBRARY = randomBytes(256 * 1024)

/** The reference machine before the install: a tool in /opt, its configuration in /etc. */
export async function writeBeforeTree (root: string): Promise<void> {
  await mkdir(join(root, 'opt/tool/bin'), { recursive: true })
  await mkdir(join(root, 'opt/tool/lib'), { recursive: true })
  await mkdir(join(root, 'opt/tool/share/doc'), { recursive: true })
  await mkdir(join(root, 'etc/tool'), { recursive: true })
  await writeFile(join(root, 'opt/tool/bin/tool'), '#!/bin/sh\necho tool 1\n', { mode: 0o755 })
  await writeFile(join(root, 'opt/tool/lib/libold.so'), 'old library')
  await writeFile(join(root, 'opt/tool/share/doc/README'), 'read me')
  await writeFile(join(root, 'etc/tool/tool.conf'), 'port=80\n')
  await writeFile(join(root, 'etc/tool/unused.conf'), 'stale=1\n')
  for (const file of ['opt/tool/lib/libold.so', 'opt/tool/share/doc/README', 'etc/tool/tool.conf', 'etc/tool/unused.conf']) await chmod(join(root, file), 0o644)
}

/**
 * The install between the snapshots: files added (in a new folder too), a
 * configuration changed, a file removed, a link, a permission change. The
 * fourth file written is the large library.
 */
export async function installOnReference (root: string): Promise<void> {
  await writeFile(join(root, 'etc/tool/tool.conf'), 'port=8080\ntls=on\n')
  await rm(join(root, 'etc/tool/unused.conf'))
  await writeFile(join(root, 'opt/tool/VERSION'), '2.0\n', { mode: 0o644 })
  await writeFile(join(root, 'opt/tool/bin/tool2'), '#!/bin/sh\necho tool 2\n', { mode: 0o755 })
  await symlink('tool2', join(root, 'opt/tool/bin/current'))
  await writeFile(join(root, 'opt/tool/lib/libnew.so'), LARGE_LIBRARY, { mode: 0o644 })
  await mkdir(join(root, 'opt/tool/plugins'), { mode: 0o750 })
  await chmod(join(root, 'opt/tool/plugins'), 0o750)
  await writeFile(join(root, 'opt/tool/plugins/extra.so'), 'plugin', { mode: 0o640 })
  await chmod(join(root, 'opt/tool/share/doc/README'), 0o600)
  await writeFile(join(root, 'opt/tool/.notes.swp'), 'editor scratch')
}

/** Takes a snapshot of /opt and /etc under `rootDir` into `statePath`, as capture start does. */
export async function startCapture (rootDir: string, statePath: string): Promise<void> {
  await startSnapshot({ rootDir, statePath, roots: ['/opt', '/etc'], excludes: DEFAULT_EXCLUDES })
}

/** Rewrites the source a snapshot records (a capture made on another distribution or architecture). */
export async function withSource (statePath: string, out: string, source: Partial<CaptureSource>): Promise<void> {
  const lines = gunzipSync(await readFile(statePath)).toString('utf8').split('\n')
  const header = JSON.parse(lines[0]) as StateHeader
  lines[0] = JSON.stringify({ ...header, source: { ...header.source, ...source } })
  await writeFile(out, gzipSync(lines.join('\n')))
}

export interface CapturedTool {
  /** The reference machine's tree after the install. */
  reference: string
  statePath: string
  packageFile: string
}

/** A reference machine, its snapshot, the install and the capture package of it. */
export async function captureTool (folder: string): Promise<CapturedTool> {
  const reference = join(folder, 'reference')
  await writeBeforeTree(reference)
  const statePath = join(folder, 'tool.state')
  await startCapture(reference, statePath)
  await installOnReference(reference)
  const packageFile = join(folder, 'tool-2.0.capture.tar.gz')
  await finishCapture({ statePath, name: 'tool', version: '2.0', out: packageFile })
  return { reference, statePath, packageFile }
}
