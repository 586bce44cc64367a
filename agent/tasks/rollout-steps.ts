import { MeshdeployError, type DetectionRule, type Manifest, type ManifestDependency, type ManifestPackage, type ManifestSuperseded } from '../../protocol/index.js'
import type { DetectionResult } from '../install/detection.js'

/** A dependency failed to install, or is still missing after its installer ran: the task fails on this device with the reason. */
export class DependencyFailedError extends MeshdeployError {
  readonly exitCode: number | null | undefined
  readonly outputTail: string
  constructor (message: string, exitCode?: number | null, outputTail = '') {
    super(message, 'dependency-failed')
    this.name = 'DependencyFailedError'
    this.exitCode = exitCode
    this.outputTail = outputTail
  }
}

/** A superseded package could not be removed before its replacement. */
export class SupersededRemovalError extends MeshdeployError {
  readonly exitCode: number | null | undefined
  readonly outputTail: string
  constructor (message: string, exitCode?: number | null, outputTail = '') {
    super(message, 'superseded-removal-failed')
    this.name = 'SupersededRemovalError'
    this.exitCode = exitCode
    this.outputTail = outputTail
  }
}

/** What an install must do before its own package on this device. */
export interface RolloutPlan {
  /** Dependencies their detection rules say are missing, in install order. */
  missing: ManifestDependency[]
  /** Superseded packages to remove first (replace mode), where detected. */
  replace: ManifestSuperseded[]
  /** Superseded packages detected here that the install goes over (upgrade mode). */
  upgrade: ManifestSuperseded[]
}

export const EMPTY_PLAN: RolloutPlan = { missing: [], replace: [], upgrade: [] }

/** Looks at the device: which dependencies are missing and which superseded packages are installed. */
export async function planRollout (manifest: Manifest, detect: (rule: DetectionRule) => Promise<DetectionResult>): Promise<RolloutPlan> {
  if (manifest.action !== 'install') return EMPTY_PLAN
  const plan: RolloutPlan = { missing: [], replace: [], upgrade: [] }
  for (const dependency of manifest.dependencies ?? []) {
    if (!(await detect(dependency.install.detection!)).installed) plan.missing.push(dependency)
  }
  for (const superseded of manifest.supersedes ?? []) {
    if (!(await detect(superseded.detection)).installed) continue
    if (superseded.mode === 'replace') plan.replace.push(superseded)
    else plan.upgrade.push(superseded)
  }
  return plan
}

/** The packages whose content the plan and the task need, in the order they are used. */
export function contentOf (plan: RolloutPlan, manifest: Manifest, ownContent: boolean): ManifestPackage[] {
  const out: ManifestPackage[] = []
  const add = (pkg: ManifestPackage): void => { if (!out.some(other => other.id === pkg.id)) out.push(pkg) }
  for (const dependency of plan.missing) add(dependency.package)
  for (const superseded of plan.replace) if (superseded.content !== undefined) add(superseded.content)
  if (ownContent) add(manifest.package)
  return out
}

/** How long the installs and removals of an attempt may take at most: what a maintenance window must leave room for. */
export function neededInstallMs (plan: RolloutPlan, manifest: Manifest): number {
  const seconds = plan.missing.reduce((sum, dependency) => sum + dependency.install.timeoutSeconds, 0) +
    plan.replace.reduce((sum, superseded) => sum + (superseded.timeoutSeconds ?? manifest.install.timeoutSeconds), 0) +
    manifest.install.timeoutSeconds
  return seconds * 1000
}

/** The manifest an installer sees for a dependency: the task's, with the dependency's package and install spec. */
export function dependencyManifest (manifest: Manifest, dependency: ManifestDependency): Manifest {
  const { dependencies: _dependencies, supersedes: _supersedes, ...rest } = manifest
  return { ...rest, action: 'install', package: dependency.package, install: dependency.install }
}

/** The manifest an uninstaller sees for a superseded package. */
export function removalManifest (manifest: Manifest, superseded: ManifestSuperseded): Manifest {
  const { dependencies: _dependencies, supersedes: _supersedes, ...rest } = manifest
  const install: Manifest['install'] = { runArgs: [], timeoutSeconds: superseded.timeoutSeconds ?? manifest.install.timeoutSeconds, detection: superseded.detection }
  if (superseded.uninstall !== undefined) install.uninstall = superseded.uninstall
  if (superseded.exitCodes !== undefined) install.exitCodes = superseded.exitCodes
  const pkg: ManifestPackage = superseded.content ?? { ...manifest.package, id: superseded.package.id, name: superseded.package.name, version: superseded.package.version }
  return { ...rest, action: 'uninstall', package: pkg, install }
}
