import { z } from 'zod'
import { SUPERSEDE_MODES } from '../../protocol/index.js'
import type { PackageRecord } from '../store/types.js'

/** Dependencies and superseded packages one package may name directly. */
export const MAX_DIRECT_DEPENDENCIES = 16
export const MAX_SUPERSEDED = 16

const packageIdSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be a package id')

/** A dependency: a package by id, or by name with the lowest version that will do (the newest such package is used). */
export const dependencyReferenceSchema = z.union([
  z.object({ packageId: packageIdSchema }).strict(),
  z.object({ name: z.string().trim().min(1).max(200), minVersion: z.string().trim().min(1).max(100).optional() }).strict()
])

export type DependencyReference = z.infer<typeof dependencyReferenceSchema>

export const supersedesEntrySchema = z.object({
  packageId: packageIdSchema,
  /** upgrade: install the new package over the old one; replace: remove the old one (its uninstall spec) first. */
  mode: z.enum(SUPERSEDE_MODES)
}).strict()

export type SupersedesEntry = z.infer<typeof supersedesEntrySchema>

export type PackageGraphNode = Pick<PackageRecord, 'id' | 'name' | 'version' | 'dependsOn' | 'supersedes' | 'createdAt'>

/**
 * Orders version strings the way packagers number releases: numeric parts
 * as numbers (1.10 after 1.9), other parts as text, a release after its
 * pre-releases (1.0 after 1.0-rc1). Negative, zero or positive.
 */
export function compareVersions (a: string, b: string): number {
  const split = (version: string): { main: string[], pre: string | undefined } => {
    const [main, ...pre] = version.trim().split(/[-~]/)
    return { main: main.match(/\d+|[^\d.+_]+/g) ?? [], pre: pre.length > 0 ? pre.join('-') : undefined }
  }
  const comparePart = (x: string | undefined, y: string | undefined): number => {
    if (x === y) return 0
    if (x === undefined) return -1
    if (y === undefined) return 1
    const numeric = /^\d+$/
    if (numeric.test(x) && numeric.test(y)) return Math.sign(Number(x) - Number(y)) || Math.sign(x.length - y.length)
    if (numeric.test(x) !== numeric.test(y)) return numeric.test(x) ? 1 : -1
    return x < y ? -1 : 1
  }
  const left = split(a)
  const right = split(b)
  for (let index = 0; index < Math.max(left.main.length, right.main.length); index++) {
    const part = comparePart(left.main[index], right.main[index])
    if (part !== 0) return part
  }
  if (left.pre === right.pre) return 0
  if (left.pre === undefined) return 1
  if (right.pre === undefined) return -1
  return compareVersions(left.pre.replace(/[^0-9A-Za-z]+/g, '.'), right.pre.replace(/[^0-9A-Za-z]+/g, '.'))
}

/** The package a dependency names now, among `packages`: by id, or the newest of that name at or above the minimum version. */
export function resolveReference (reference: DependencyReference, packages: Iterable<PackageGraphNode>): PackageGraphNode | undefined {
  let best: PackageGraphNode | undefined
  for (const candidate of packages) {
    if ('packageId' in reference) {
      if (candidate.id === reference.packageId) return candidate
      continue
    }
    if (candidate.name !== reference.name) continue
    if (reference.minVersion !== undefined && compareVersions(candidate.version, reference.minVersion) < 0) continue
    if (best === undefined || compareVersions(candidate.version, best.version) > 0 || (compareVersions(candidate.version, best.version) === 0 && candidate.createdAt > best.createdAt)) best = candidate
  }
  return best
}

/** How a reference reads in messages. */
export function describeReference (reference: DependencyReference): string {
  return 'packageId' in reference ? `package ${reference.packageId.slice(0, 12)}` : `${reference.name}${reference.minVersion !== undefined ? ` >= ${reference.minVersion}` : ''}`
}

/** A dependency that names no package. */
export class MissingDependencyError extends Error {
  constructor (readonly packageLabel: string, readonly reference: DependencyReference) {
    super(`${packageLabel} depends on ${describeReference(reference)}, which is not a package`)
    this.name = 'MissingDependencyError'
  }
}

/** Packages that depend on each other in a circle, or supersede each other in one. */
export class DependencyCycleError extends Error {
  constructor (readonly relation: 'dependsOn' | 'supersedes', readonly cycle: PackageGraphNode[]) {
    super(`${relation === 'dependsOn' ? 'dependencies' : 'supersedence'} would form a cycle: ${cycle.map(node => `${node.name} ${node.version}`).join(' → ')}`)
    this.name = 'DependencyCycleError'
  }
}

function neighbours (node: PackageGraphNode, relation: 'dependsOn' | 'supersedes', packages: readonly PackageGraphNode[]): PackageGraphNode[] {
  if (relation === 'supersedes') return (node.supersedes ?? []).flatMap(entry => packages.find(other => other.id === entry.packageId) ?? [])
  return (node.dependsOn ?? []).map(reference => {
    const found = resolveReference(reference, packages)
    if (found === undefined) throw new MissingDependencyError(`${node.name} ${node.version}`, reference)
    return found
  })
}

/**
 * Throws DependencyCycleError when a package, among the others, would lie on
 * a cycle. A new cycle must pass through the package that is added or
 * changed (names that resolve to it now are edges into it), so a search
 * from it finds every new one.
 */
export function checkAcyclic (start: PackageGraphNode, others: readonly PackageGraphNode[], relation: 'dependsOn' | 'supersedes'): void {
  const packages = [start, ...others.filter(other => other.id !== start.id)]
  const path: PackageGraphNode[] = []
  const done = new Set<string>()
  const visit = (node: PackageGraphNode): void => {
    const at = path.findIndex(entry => entry.id === node.id)
    if (at >= 0) throw new DependencyCycleError(relation, [...path.slice(at), node])
    if (done.has(node.id)) return
    path.push(node)
    for (const next of neighbours(node, relation, packages)) visit(next)
    path.pop()
    done.add(node.id)
  }
  visit(start)
}

/**
 * The packages to install before `root`, in order: each dependency after its
 * own dependencies, each once. Throws MissingDependencyError or
 * DependencyCycleError (a graph changed by hand in the store).
 */
export function installOrder (root: PackageGraphNode, packages: readonly PackageGraphNode[]): PackageGraphNode[] {
  const order: PackageGraphNode[] = []
  const path: PackageGraphNode[] = []
  const placed = new Set<string>()
  const visit = (node: PackageGraphNode): void => {
    if (path.some(entry => entry.id === node.id)) throw new DependencyCycleError('dependsOn', [...path, node])
    if (placed.has(node.id)) return
    path.push(node)
    for (const next of neighbours(node, 'dependsOn', packages)) visit(next)
    path.pop()
    placed.add(node.id)
    if (node.id !== root.id) order.push(node)
  }
  visit(root)
  return order
}
