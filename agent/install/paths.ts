import { isAbsolute, join, normalize, relative, resolve, sep } from 'node:path'
import { PathEscapeError } from '../../protocol/index.js'

/** Resolves an absolute path of the manifest under the agent's install root. */
export function underInstallRoot (installRoot: string, path: string): string {
  const root = resolve(installRoot)
  const target = resolve(join(root, normalize(path)))
  if (target !== root && !target.startsWith(root.endsWith(sep) ? root : root + sep)) throw new PathEscapeError(path)
  return target
}

/** Whether `entry` (a relative archive path) stays inside `destination` once joined to it. */
export function staysInside (destination: string, entry: string): boolean {
  if (entry === '' || isAbsolute(entry) || /^[A-Za-z]:/.test(entry) || entry.includes('\0')) return false
  const target = resolve(destination, entry)
  const rel = relative(resolve(destination), target)
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel))
}
