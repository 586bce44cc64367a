import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { z } from 'zod'
import {
  Chunker, ContentStore, DEFAULT_CHUNK_SIZE_BYTES, TooLargeError, detectionRuleSchema, exitCodeMapSchema, nameSchema,
  packageIdOf, platformOfRule, platformOfUninstall, publisherSignatureSchema, sanitizeFileName, uninstallSpecSchema,
  ARCHITECTURES, PACKAGE_KINDS, PLATFORMS, type CaptureSummary, type ChunkingResult, type PackageKind, type Platform
} from '../../protocol/index.js'
import { ConflictError, NotFoundError, PayloadTooLargeError, ValidationError } from '../errors.js'
import type { PackageRecord, Store } from '../store/types.js'
import type { SettingsService } from '../settings/service.js'
import type { PublisherService } from '../publishers/service.js'
import { collect } from '../store/level-store.js'
import { platformOfKind, sniffPackageType, type SniffedType } from './sniff.js'
import { CaptureInspection } from './capture-inspection.js'
import { parseWith, refuseControlCharacters } from '../validation.js'
import { ApiError } from '../errors.js'
import {
  DependencyCycleError, MAX_DIRECT_DEPENDENCIES, MAX_SUPERSEDED, MissingDependencyError, checkAcyclic, describeReference, dependencyReferenceSchema,
  resolveReference, supersedesEntrySchema
} from './dependencies.js'
import { label } from '../../protocol/text.js'

export const packageMetadataSchema = z.object({
  name: nameSchema,
  version: label(z.string().trim().min(1).max(100)),
  description: z.string().max(4000).optional(),
  publisher: label(z.string().max(200)).optional(),
  /** Overrides what was detected from the file's content. */
  kind: z.enum(PACKAGE_KINDS).optional(),
  platform: z.enum(PLATFORMS).optional(),
  arch: z.enum(ARCHITECTURES).optional(),
  detection: detectionRuleSchema.optional(),
  /** Exit code → outcome (success, success-reboot-required, success-reboot-started, retry, failure); overrides the defaults. */
  exitCodes: exitCodeMapSchema.optional(),
  uninstall: uninstallSpecSchema.optional(),
  /** Approved for self-service: devices may request it. */
  selfService: z.boolean().optional(),
  /** The publisher's signature over the file's SHA-256 (meshdeploy package sign); required with security verification on. */
  publisherSignature: publisherSignatureSchema.optional(),
  /** Packages an install brings first where their detection rules say they are missing: `{ packageId }` or `{ name, minVersion }`. */
  dependsOn: z.array(dependencyReferenceSchema).max(MAX_DIRECT_DEPENDENCIES).optional(),
  /** Older packages this one supersedes: `{ packageId, mode: upgrade | replace }`. */
  supersedes: z.array(supersedesEntrySchema).max(MAX_SUPERSEDED).optional()
}).strict()

export type PackageMetadata = z.infer<typeof packageMetadataSchema>

/** An edit of a package's metadata: fields present replace the package's; `null` removes an optional one. */
export const packagePatchSchema = z.object({
  name: nameSchema.optional(),
  version: label(z.string().trim().min(1).max(100)).optional(),
  description: z.string().max(4000).nullable().optional(),
  publisher: label(z.string().max(200)).nullable().optional(),
  kind: z.enum(PACKAGE_KINDS).optional(),
  platform: z.enum(PLATFORMS).optional(),
  arch: z.enum(ARCHITECTURES).optional(),
  detection: detectionRuleSchema.nullable().optional(),
  exitCodes: exitCodeMapSchema.nullable().optional(),
  uninstall: uninstallSpecSchema.nullable().optional(),
  selfService: z.boolean().optional(),
  dependsOn: z.array(dependencyReferenceSchema).max(MAX_DIRECT_DEPENDENCIES).nullable().optional(),
  supersedes: z.array(supersedesEntrySchema).max(MAX_SUPERSEDED).nullable().optional()
}).strict().refine(patch => Object.keys(patch).length > 0, { message: 'name at least one field to change' })

export type PackagePatch = z.infer<typeof packagePatchSchema>

/** Platforms an installer kind can run on; archives and plain files go anywhere. */
const KIND_PLATFORMS: Partial<Record<PackageKind, readonly Platform[]>> = {
  msi: ['windows'],
  exe: ['windows'],
  bat: ['windows'],
  ps1: ['windows'],
  pkg: ['macos'],
  deb: ['linux'],
  rpm: ['linux'],
  shell: ['linux', 'macos'],
  // Agents replay captures of Linux systems; Windows captures (registry included) are not packaged yet.
  capture: ['linux']
}

/** Refuses a package whose kind, platform, detection rule and uninstall spec do not fit together. */
export function checkPackageConsistency (record: Pick<PackageRecord, 'kind' | 'platform' | 'detection' | 'uninstall'>): void {
  const allowed = KIND_PLATFORMS[record.kind]
  if (allowed !== undefined && !allowed.includes(record.platform)) {
    throw new ValidationError(`a ${record.kind} package runs on ${allowed.join(' or ')}, not on ${record.platform}`, [{ path: 'platform', message: `must be ${allowed.join(' or ')} for ${record.kind}` }])
  }
  const mismatch = (what: 'detection' | 'uninstall', platform: Platform): void => {
    if (platform === 'any' || record.platform === 'any' || platform === record.platform) return
    throw new ValidationError(`the ${what} ${what === 'detection' ? 'rule' : 'spec'} is for ${platform}, the package for ${record.platform}`, [{ path: what, message: `not a ${record.platform} ${what}` }])
  }
  if (record.uninstall?.type === 'capture' && record.kind !== 'capture') {
    throw new ValidationError('a capture uninstall (undo journal) applies to capture packages only', [{ path: 'uninstall', message: `not for a ${record.kind} package` }])
  }
  if (record.detection !== undefined) mismatch('detection', platformOfRule(record.detection))
  if (record.uninstall !== undefined) mismatch('uninstall', platformOfUninstall(record.uninstall))
}

export interface PackageServiceInit {
  store: Store
  content: ContentStore
  /** @default DEFAULT_CHUNK_SIZE_BYTES */
  chunkSizeBytes?: number
  maxPackageBytes: number
  settings: SettingsService
  publishers: PublisherService
  now?: () => number
}

/** What a client sees of a package: everything but the chunk list. */
export type PackageSummary = Omit<PackageRecord, 'chunks'> & { chunkCount: number }

export function summarizePackage (record: PackageRecord): PackageSummary {
  const { chunks, ...rest } = record
  return { ...rest, chunkCount: chunks.length }
}

/** An upload in progress: chunks are stored as they arrive and removed again if it fails. */
export class PackageUpload {
  private readonly created = new Set<string>()
  private result?: ChunkingResult
  private sniffed?: SniffedType
  private inspection?: CaptureInspection
  private fileName = 'package'
  private aborted = false
  /** The chunk being written; a clean-up waits for it so that it sees every chunk stored. */
  private storing: Promise<unknown> = Promise.resolve()

  constructor (private readonly service: PackageService, private readonly init: { chunkSizeBytes: number, maxPackageBytes: number }) {}

  /** Chunks in flight that a concurrent clean-up must not remove. */
  get heldChunks (): ReadonlySet<string> {
    return this.created
  }

  /** Streams the file into the content store, chunking and hashing it on the way. */
  async ingest (file: Readable, fileName: string): Promise<void> {
    this.fileName = sanitizeFileName(fileName)
    const chunker = new Chunker({
      chunkSizeBytes: this.init.chunkSizeBytes,
      maxSizeBytes: this.init.maxPackageBytes,
      onChunk: async chunk => {
        if (this.aborted) throw new Error('the upload was aborted')
        if (chunk.index === 0) {
          this.sniffed = sniffPackageType(chunk.bytes, this.fileName)
          if (this.sniffed.kind === 'capture') this.inspection = new CaptureInspection()
        }
        await this.inspection?.write(chunk.bytes)
        const storing = this.service.content.put(chunk.bytes, chunk.sha256, { sync: false, hashedByCaller: true })
        this.storing = storing
        const { created } = await storing
        if (created) this.created.add(chunk.sha256)
      }
    })
    try {
      await pipeline(file, chunker)
    } catch (error) {
      this.inspection?.abort()
      if (error instanceof TooLargeError) throw new PayloadTooLargeError(`the package is larger than the limit of ${this.init.maxPackageBytes} bytes`)
      throw error
    }
    this.result = chunker.result
  }

  /** Records the package; its chunks are flushed to disk first. */
  async commit (metadata: PackageMetadata, createdBy: string): Promise<PackageRecord> {
    if (this.result === undefined) throw new ValidationError('the request has no file part')
    const sniffed = this.sniffed ?? sniffPackageType(new Uint8Array(0), this.fileName)
    const kind = metadata.kind ?? sniffed.kind
    const record: PackageRecord = {
      id: packageIdOf(this.result),
      name: metadata.name,
      version: metadata.version,
      platform: metadata.platform ?? (metadata.kind !== undefined ? platformOfKind(kind) : sniffed.platform),
      arch: metadata.arch ?? sniffed.arch,
      kind,
      fileName: this.fileName,
      sizeBytes: this.result.sizeBytes,
      sha256: this.result.sha256,
      chunkSizeBytes: this.result.chunkSizeBytes,
      chunks: this.result.chunks,
      createdAt: new Date(this.service.now()).toISOString(),
      createdBy
    }
    if (metadata.description !== undefined) record.description = metadata.description
    if (metadata.publisher !== undefined) record.publisher = metadata.publisher
    if (metadata.detection !== undefined) record.detection = metadata.detection
    if (metadata.exitCodes !== undefined && Object.keys(metadata.exitCodes).length > 0) record.exitCodes = metadata.exitCodes
    if (metadata.uninstall !== undefined) record.uninstall = metadata.uninstall
    if (metadata.selfService !== undefined) record.selfService = metadata.selfService
    if (metadata.dependsOn !== undefined && metadata.dependsOn.length > 0) record.dependsOn = metadata.dependsOn
    if (metadata.supersedes !== undefined && metadata.supersedes.length > 0) record.supersedes = metadata.supersedes
    if (kind === 'capture') {
      try {
        record.capture = await this.captureSummary()
      } catch (error) {
        await this.service.releaseUpload(this)
        throw error
      }
      record.uninstall ??= { type: 'capture' }
    }
    return await this.service.commitUpload(this, record, metadata.publisherSignature)
  }

  /** The summary of a capture package, read as it streamed in; refuses a file that is not a well-formed one. */
  private async captureSummary (): Promise<CaptureSummary> {
    if (this.inspection === undefined) throw new ValidationError('the file is not a capture package: it does not start with a capture header (make one with meshdeploy capture finish)', [{ path: 'kind', message: 'not a capture package' }])
    try {
      return await this.inspection.finish()
    } catch (error) {
      throw new ValidationError(`not a well-formed capture package: ${(error as Error).message}`, [{ path: 'file', message: (error as Error).message }])
    }
  }

  /** Removes the chunks this upload created that nothing else refers to. */
  async abort (): Promise<void> {
    this.aborted = true
    this.inspection?.abort()
    await this.storing.catch(() => {})
    await this.service.releaseUpload(this)
  }
}

export class PackageService {
  readonly content: ContentStore
  readonly now: () => number
  private readonly store: Store
  private readonly chunkSizeBytes: number
  private readonly maxPackageBytes: number
  private readonly uploads = new Set<PackageUpload>()
  private readonly settings: SettingsService
  private readonly publishers: PublisherService

  constructor (init: PackageServiceInit) {
    this.store = init.store
    this.settings = init.settings
    this.publishers = init.publishers
    this.content = init.content
    this.chunkSizeBytes = init.chunkSizeBytes ?? DEFAULT_CHUNK_SIZE_BYTES
    this.maxPackageBytes = init.maxPackageBytes
    this.now = init.now ?? Date.now
  }

  get maxPackageSizeBytes (): number {
    return this.maxPackageBytes
  }

  beginUpload (): PackageUpload {
    const upload = new PackageUpload(this, { chunkSizeBytes: this.chunkSizeBytes, maxPackageBytes: this.maxPackageBytes })
    this.uploads.add(upload)
    return upload
  }

  /**
   * Records an upload: the publisher signature is checked first (required with
   * security verification on), and nothing is kept if it does not verify.
   */
  async commitUpload (upload: PackageUpload, record: PackageRecord, signature?: PackageMetadata['publisherSignature']): Promise<PackageRecord> {
    try {
      checkPackageConsistency(record)
      await this.checkRelations(record)
      const verified = await this.publishers.verify(record.sha256, signature, this.settings.get().securityVerification)
      if (verified !== undefined) record.publisherSignature = verified
      const existing = await this.store.collections.packages.get(record.id)
      if (existing !== undefined) {
        throw new ConflictError('package-exists', `the same content is already package ${existing.id} (${existing.name} ${existing.version})`)
      }
      await this.content.syncAll()
      await this.store.write([{ type: 'put', collection: 'packages', key: record.id, value: record }])
      this.uploads.delete(upload)
      return record
    } catch (error) {
      await this.releaseUpload(upload)
      throw error
    }
  }

  async releaseUpload (upload: PackageUpload): Promise<void> {
    this.uploads.delete(upload)
    await this.removeUnreferenced(upload.heldChunks)
  }

  async get (id: string): Promise<PackageRecord> {
    const record = await this.store.collections.packages.get(id)
    if (record === undefined) throw new NotFoundError('package', id)
    return record
  }

  async find (id: string): Promise<PackageRecord | undefined> {
    return await this.store.collections.packages.get(id)
  }

  async list (): Promise<PackageRecord[]> {
    const records = await collect(this.store.collections.packages.values())
    return records.sort((a, b) => b.createdAt.localeCompare(a.createdAt))
  }

  /** Changes a package's metadata; returns the new record. */
  async update (id: string, patch: PackagePatch, updatedBy: string): Promise<PackageRecord> {
    const current = await this.get(id)
    const next: PackageRecord = { ...current, updatedAt: new Date(this.now()).toISOString(), updatedBy }
    for (const field of ['name', 'version', 'arch', 'selfService'] as const) {
      if (patch[field] !== undefined) (next as unknown as Record<string, unknown>)[field] = patch[field]
    }
    if (patch.kind !== undefined) {
      next.kind = patch.kind
      if (patch.platform === undefined) next.platform = platformOfKind(patch.kind)
    }
    if (patch.platform !== undefined) next.platform = patch.platform
    for (const field of ['description', 'publisher', 'detection', 'exitCodes', 'uninstall', 'dependsOn', 'supersedes'] as const) {
      if (patch[field] === null) delete next[field]
      else if (patch[field] !== undefined) (next as unknown as Record<string, unknown>)[field] = patch[field]
    }
    if (next.exitCodes !== undefined && Object.keys(next.exitCodes).length === 0) delete next.exitCodes
    if (next.dependsOn?.length === 0) delete next.dependsOn
    if (next.supersedes?.length === 0) delete next.supersedes
    checkPackageConsistency(next)
    await this.checkRelations(next)
    await this.store.write([{ type: 'put', collection: 'packages', key: id, value: next }])
    return next
  }

  /**
   * Refuses dependencies and supersedence that cannot work: a package that
   * does not exist, a dependency without a detection rule (the agent could
   * not tell that it is missing) or for another platform, a replaced package
   * without an uninstall spec, and cycles. Also refuses a change that
   * breaks what other packages expect of this one.
   */
  async checkRelations (record: PackageRecord): Promise<void> {
    const others = (await this.list()).filter(other => other.id !== record.id)
    const all = [record, ...others]
    const label = (pkg: Pick<PackageRecord, 'name' | 'version'>): string => `${pkg.name} ${pkg.version}`
    for (const [index, reference] of (record.dependsOn ?? []).entries()) {
      const found = resolveReference(reference, all) as PackageRecord | undefined
      const path = `dependsOn.${index}`
      if (found === undefined) throw new ApiError(422, 'dependency-missing', `${label(record)} depends on ${describeReference(reference)}, which is not a package; upload it first`, { errors: [{ path, message: 'no such package' }] })
      if (found.id === record.id) throw new ApiError(422, 'dependency-cycle', `${label(record)} cannot depend on itself`, { errors: [{ path, message: 'names the package itself' }] })
      if (found.detection === undefined) throw new ApiError(422, 'dependency-undetectable', `the dependency ${label(found)} has no detection rule, so a device could not tell whether it is missing; give it one first`, { errors: [{ path, message: 'the dependency has no detection rule' }] })
      if (found.kind === 'file') throw new ApiError(422, 'dependency-not-installable', `the dependency ${label(found)} is a plain file, which has no installer`, { errors: [{ path, message: 'a plain file cannot be installed' }] })
      if (found.platform !== 'any' && record.platform !== 'any' && found.platform !== record.platform) {
        throw new ApiError(422, 'dependency-platform', `the dependency ${label(found)} is for ${found.platform}, ${label(record)} for ${record.platform}`, { errors: [{ path, message: `not a ${record.platform} package` }] })
      }
    }
    for (const [index, entry] of (record.supersedes ?? []).entries()) {
      const path = `supersedes.${index}`
      const found = others.find(other => other.id === entry.packageId)
      if (entry.packageId === record.id) throw new ApiError(422, 'supersedence-cycle', `${label(record)} cannot supersede itself`, { errors: [{ path, message: 'names the package itself' }] })
      if (found === undefined) throw new ApiError(422, 'superseded-missing', `${label(record)} supersedes package ${entry.packageId.slice(0, 12)}, which does not exist`, { errors: [{ path, message: 'no such package' }] })
      if (found.detection === undefined) throw new ApiError(422, 'superseded-undetectable', `the superseded ${label(found)} has no detection rule, so devices where it is installed cannot be found; give it one first`, { errors: [{ path, message: 'the superseded package has no detection rule' }] })
      if (entry.mode === 'replace' && found.uninstall === undefined) throw new ApiError(422, 'superseded-no-uninstall', `replacing ${label(found)} needs its uninstall spec; give it one first or supersede it in upgrade mode`, { errors: [{ path, message: 'the superseded package has no uninstall spec' }] })
    }
    try {
      checkAcyclic(record, others, 'dependsOn')
      checkAcyclic(record, others, 'supersedes')
    } catch (error) {
      if (error instanceof DependencyCycleError) throw new ApiError(422, error.relation === 'dependsOn' ? 'dependency-cycle' : 'supersedence-cycle', error.message, { errors: [{ path: error.relation, message: error.message }] })
      // Another package's dependency that names nothing any more is refused when that package is used, not here.
      if (!(error instanceof MissingDependencyError)) throw error
    }
    for (const other of others) {
      const dependsHere = (other.dependsOn ?? []).some(reference => resolveReference(reference, all)?.id === record.id)
      if (dependsHere && record.detection === undefined) throw new ApiError(422, 'dependency-undetectable', `${label(other)} depends on this package, which then needs a detection rule`, { errors: [{ path: 'detection', message: 'required while other packages depend on this one' }] })
      const replaced = (other.supersedes ?? []).some(entry => entry.packageId === record.id && entry.mode === 'replace')
      if (replaced && record.uninstall === undefined) throw new ApiError(422, 'superseded-no-uninstall', `${label(other)} replaces this package, which then needs an uninstall spec`, { errors: [{ path: 'uninstall', message: 'required while another package replaces this one' }] })
    }
  }

  /** The package, unless other packages depend on it or supersede it (409 package-in-use, naming them). */
  async assertDeletable (id: string): Promise<PackageRecord> {
    const record = await this.get(id)
    const dependents = await this.dependentsOf(id)
    if (dependents.length > 0) {
      throw new ConflictError('package-in-use', `${dependents.map(entry => `${entry.package.name} ${entry.package.version} ${entry.relation === 'dependsOn' ? 'depends on' : 'supersedes'} it`).join('; ')}; change those packages first`)
    }
    return record
  }

  /** Packages whose dependencies or supersedence would name nothing without this one. */
  async dependentsOf (id: string): Promise<Array<{ package: PackageRecord, relation: 'dependsOn' | 'supersedes' }>> {
    const all = await this.list()
    const rest = all.filter(other => other.id !== id)
    const out: Array<{ package: PackageRecord, relation: 'dependsOn' | 'supersedes' }> = []
    for (const other of rest) {
      if ((other.dependsOn ?? []).some(reference => resolveReference(reference, all)?.id === id && resolveReference(reference, rest) === undefined)) out.push({ package: other, relation: 'dependsOn' })
      if ((other.supersedes ?? []).some(entry => entry.packageId === id)) out.push({ package: other, relation: 'supersedes' })
    }
    return out
  }

  /** Deletes the package record and every chunk no other package uses; refused while other packages depend on it or supersede it. */
  async delete (id: string): Promise<PackageRecord> {
    const record = await this.assertDeletable(id)
    await this.store.write([{ type: 'del', collection: 'packages', key: id }])
    await this.removeUnreferenced(new Set(record.chunks))
    return record
  }

  /** Removes chunks that no stored package and no upload in progress refers to. */
  private async removeUnreferenced (candidates: ReadonlySet<string>): Promise<void> {
    if (candidates.size === 0) return
    const referenced = new Set<string>()
    for await (const record of this.store.collections.packages.values()) {
      for (const chunk of record.chunks) if (candidates.has(chunk)) referenced.add(chunk)
    }
    for (const upload of this.uploads) {
      for (const chunk of upload.heldChunks) referenced.add(chunk)
    }
    for (const chunk of candidates) {
      if (!referenced.has(chunk)) await this.content.delete(chunk)
    }
  }

  /** Removes chunks left by uploads that a crash interrupted. */
  async collectGarbage (options: { olderThanMs?: number } = {}): Promise<number> {
    const referenced = new Set<string>()
    for await (const record of this.store.collections.packages.values()) for (const chunk of record.chunks) referenced.add(chunk)
    let removed = 0
    const before = options.olderThanMs !== undefined ? this.now() - options.olderThanMs : undefined
    for await (const chunk of this.content.list()) {
      if (referenced.has(chunk)) continue
      if (before !== undefined && (await this.content.modifiedAt(chunk) ?? 0) > before) continue
      if (await this.content.delete(chunk)) removed++
    }
    return removed
  }

  parseMetadata (raw: string): PackageMetadata {
    let decoded: unknown
    try {
      decoded = JSON.parse(raw)
    } catch {
      throw new ValidationError('the metadata field is not valid JSON')
    }
    refuseControlCharacters(decoded, 'the metadata field')
    return parseWith(packageMetadataSchema, decoded, 'metadata')
  }
}
