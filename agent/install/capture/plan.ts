import { lstat, realpath } from 'node:fs/promises'
import { dirname, join, relative, sep } from 'node:path'
import { CapturePathError, isUnder, type CaptureChange } from '../../../protocol/index.js'
import { underInstallRoot } from '../paths.js'

export type StepAction = 'remove' | 'mkdir' | 'write' | 'link' | 'metadata'

/** One change as the device carries it out. */
export interface Step {
  action: StepAction
  /** The path on this device, under the install root. */
  path: string
  /** The path as captured. */
  capturedPath: string
  /** The change; absent for a parent folder this device lacks. */
  change?: CaptureChange
  /** The change's position in the package: names its staged content. */
  index?: number
}

function actionOf (change: CaptureChange): StepAction {
  if (change.op === 'remove') return 'remove'
  if (change.op === 'metadata') return 'metadata'
  return change.type === 'dir' ? 'mkdir' : change.type === 'symlink' ? 'link' : 'write'
}

/**
 * Orders the changes for applying: removals deepest first (so a folder
 * goes after what was in it, and a folder that became a file is gone before
 * the file comes), then folders parents first, then files and links, then
 * mode and owner changes. Refuses a change below a link the same package
 * creates: following it could lead anywhere.
 */
export function orderSteps (changes: readonly CaptureChange[], installRoot: string): Step[] {
  const links = new Set<string>()
  for (const change of changes) if (change.type === 'symlink' && change.op !== 'remove') links.add(change.path)
  const removals: Step[] = []
  const folders: Step[] = []
  const contents: Step[] = []
  const metadata: Step[] = []
  changes.forEach((change, index) => {
    for (let parent = dirname(change.path); parent !== '/' && parent !== '.'; parent = dirname(parent)) {
      if (links.has(parent)) throw new CapturePathError(change.path, `lies below ${parent}, a link the same package creates`)
    }
    const action = actionOf(change)
    const step: Step = { action, path: underInstallRoot(installRoot, change.path), capturedPath: change.path, change, index }
    if (action === 'remove') removals.push(step)
    else if (action === 'mkdir') folders.push(step)
    else if (action === 'metadata') metadata.push(step)
    else contents.push(step)
  })
  return [...removals.reverse(), ...folders, ...contents, ...metadata]
}

/** The real path of `path`: symbolic links resolved as far as the path exists, the rest appended. */
export async function realpathOfNearest (path: string): Promise<string> {
  const missing: string[] = []
  let current = path
  for (;;) {
    try {
      const real = await realpath(current)
      return missing.length === 0 ? real : join(real, ...missing.reverse())
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || dirname(current) === current) throw error
      missing.push(current.slice(dirname(current).length).replace(/^\/+/, ''))
      current = dirname(current)
    }
  }
}

/**
 * Keeps every change inside its captured root as the device has it: the
 * folder a change is written into must resolve (links followed) to a place
 * under the root's own real location. A root that is itself a link on the
 * device (/opt → /data/opt) is followed; a link inside it leading elsewhere
 * is refused.
 */
export class Confinement {
  private readonly realRoots = new Map<string, string>()
  private readonly resolved = new Map<string, string>()

  constructor (private readonly installRoot: string, private readonly roots: readonly string[]) {}

  /** The captured root a path belongs to (the deepest). */
  private rootOf (capturedPath: string): string {
    let best: string | undefined
    for (const root of this.roots) if (isUnder(capturedPath, root) && (best === undefined || root.length > best.length)) best = root
    if (best === undefined) throw new CapturePathError(capturedPath, `is outside the captured roots (${this.roots.join(', ')})`)
    return best
  }

  private async realRoot (root: string): Promise<string> {
    let real = this.realRoots.get(root)
    if (real === undefined) {
      real = await realpathOfNearest(underInstallRoot(this.installRoot, root))
      this.realRoots.set(root, real)
    }
    return real
  }

  /** Forgets resolved folders: a step replaced something with a link or a folder. */
  forget (): void {
    this.resolved.clear()
  }

  async check (step: Pick<Step, 'path' | 'capturedPath'>): Promise<void> {
    const realRoot = await this.realRoot(this.rootOf(step.capturedPath))
    const parent = dirname(step.path)
    let real = this.resolved.get(parent)
    if (real === undefined) {
      real = await realpathOfNearest(parent)
      this.resolved.set(parent, real)
    }
    if (real !== realRoot && !isUnder(real, realRoot)) {
      throw new CapturePathError(step.capturedPath, `leads out of ${this.rootOf(step.capturedPath)} on this device: its folder resolves to ${real}`)
    }
  }
}

/**
 * Folders between a step's root and its path that this device lacks and no
 * earlier step creates: they are created (0755) and journaled like the
 * package's own, so that undoing removes them again.
 */
export async function missingParents (step: Step, roots: readonly string[], installRoot: string, willExist: Set<string>): Promise<Step[]> {
  let root = '/'
  for (const candidate of roots) if (isUnder(step.capturedPath, candidate) && candidate.length > root.length) root = candidate
  const rootPath = underInstallRoot(installRoot, root)
  const parents: string[] = []
  const relativeParent = relative(rootPath, dirname(step.path))
  if (relativeParent === '') return []
  let current = rootPath
  for (const part of relativeParent.split(sep)) {
    current = join(current, part)
    if (willExist.has(current)) continue
    const info = await lstat(current).catch(() => undefined)
    willExist.add(current)
    if (info === undefined) parents.push(current)
  }
  return parents.map(path => ({ action: 'mkdir' as const, path, capturedPath: join(root, relative(rootPath, path)) }))
}
