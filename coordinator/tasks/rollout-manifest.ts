import { uninstallNeedsContent, type Manifest, type ManifestDependency, type ManifestPackage, type ManifestSuperseded } from '../../protocol/index.js'
import { ApiError } from '../errors.js'
import { DependencyCycleError, MissingDependencyError, installOrder } from '../packages/dependencies.js'
import type { PackageRecord, TaskRecord } from '../store/types.js'

const ARCHIVE_KINDS = new Set(['tar', 'tar.gz', 'zip'])

/** What a task's manifest carries besides its own package: the dependency chain and the packages it supersedes. */
export type RolloutParts = Pick<Manifest, 'dependencies' | 'supersedes'>

/** A package as the manifest names it. */
export function manifestPackageOf (pkg: PackageRecord): ManifestPackage {
  const out: ManifestPackage = {
    id: pkg.id,
    name: pkg.name,
    version: pkg.version,
    platform: pkg.platform,
    arch: pkg.arch,
    kind: pkg.kind,
    fileName: pkg.fileName,
    sizeBytes: pkg.sizeBytes,
    sha256: pkg.sha256,
    chunkSizeBytes: pkg.chunkSizeBytes,
    chunks: pkg.chunks
  }
  if (pkg.publisherSignature !== undefined) out.publisherSignature = pkg.publisherSignature
  return out
}

/**
 * The dependencies of an install, in the order they install (each after its
 * own), and what its package supersedes, resolved against the packages there
 * are now. Dependencies install with the task's timeout and no arguments
 * (archives run install.sh); a superseded package is removed with its own
 * uninstall spec. Throws a 422 problem when a dependency names nothing.
 */
export function rolloutOf (task: Pick<TaskRecord, 'timeoutSeconds'>, pkg: PackageRecord, packages: readonly PackageRecord[]): RolloutParts {
  const parts: RolloutParts = {}
  let chain: PackageRecord[]
  try {
    chain = installOrder(pkg, packages) as PackageRecord[]
  } catch (error) {
    if (error instanceof MissingDependencyError) throw new ApiError(422, 'dependency-missing', `${error.message}; upload it or change the package's dependencies`)
    if (error instanceof DependencyCycleError) throw new ApiError(422, 'dependency-cycle', error.message)
    throw error
  }
  if (chain.length > 0) {
    parts.dependencies = chain.map(dependency => {
      const install: ManifestDependency['install'] = { runArgs: [], timeoutSeconds: task.timeoutSeconds }
      if (dependency.detection === undefined) throw new ApiError(422, 'dependency-undetectable', `the dependency ${dependency.name} ${dependency.version} has no detection rule`)
      install.detection = dependency.detection
      if (ARCHIVE_KINDS.has(dependency.kind)) install.entry = 'install.sh'
      if (dependency.exitCodes !== undefined && Object.keys(dependency.exitCodes).length > 0) install.exitCodes = dependency.exitCodes
      return { package: manifestPackageOf(dependency), install }
    })
  }
  const superseded: ManifestSuperseded[] = []
  for (const entry of pkg.supersedes ?? []) {
    const old = packages.find(candidate => candidate.id === entry.packageId)
    // A superseded package deleted since (its relation edited away in the store) is simply no longer looked for.
    if (old === undefined || old.detection === undefined) continue
    const item: ManifestSuperseded = { mode: entry.mode, package: { id: old.id, name: old.name, version: old.version }, detection: old.detection, timeoutSeconds: task.timeoutSeconds }
    if (entry.mode === 'replace') {
      if (old.uninstall === undefined) throw new ApiError(422, 'superseded-no-uninstall', `replacing ${old.name} ${old.version} needs its uninstall spec`)
      item.uninstall = old.uninstall
      if (uninstallNeedsContent(old.uninstall)) item.content = manifestPackageOf(old)
    }
    if (old.exitCodes !== undefined && Object.keys(old.exitCodes).length > 0) item.exitCodes = old.exitCodes
    superseded.push(item)
  }
  if (superseded.length > 0) parts.supersedes = superseded
  return parts
}
