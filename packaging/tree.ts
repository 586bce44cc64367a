import { chmod, copyFile, mkdir, symlink, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'

/** One entry of a package's file tree. */
export type TreeEntry =
  | { type: 'directory', path: string, mode: number }
  | { type: 'file', path: string, mode: number, source: string }
  | { type: 'text', path: string, mode: number, content: string }
  | { type: 'symlink', path: string, target: string }

/** Writes a file tree under a root folder, with the modes it names (absolute paths are taken under the root). */
export async function writeTree (root: string, entries: readonly TreeEntry[]): Promise<void> {
  for (const entry of entries) {
    const target = join(root, entry.path)
    switch (entry.type) {
      case 'directory':
        await mkdir(target, { recursive: true })
        await chmod(target, entry.mode)
        break
      case 'file':
        await mkdir(dirname(target), { recursive: true })
        await copyFile(entry.source, target)
        await chmod(target, entry.mode)
        break
      case 'text':
        await mkdir(dirname(target), { recursive: true })
        await writeFile(target, entry.content)
        await chmod(target, entry.mode)
        break
      case 'symlink':
        await mkdir(dirname(target), { recursive: true })
        await symlink(entry.target, target)
        break
    }
  }
}

/** The folders above each entry's path, outermost first, that the tree does not list itself. */
export function parentFolders (entries: readonly TreeEntry[]): string[] {
  const listed = new Set(entries.filter(entry => entry.type === 'directory').map(entry => entry.path))
  const parents = new Set<string>()
  for (const entry of entries) {
    for (let folder = dirname(entry.path); folder !== '/' && folder !== '.'; folder = dirname(folder)) {
      if (!listed.has(folder)) parents.add(folder)
    }
  }
  return [...parents].sort()
}
