import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { z } from 'zod'
import {
  Chunker, ContentStore, DEFAULT_CHUNK_SIZE_BYTES, TooLargeError, detectionRuleSchema, exitCodeMapSchema, nameSchema,
  packageIdOf, platformOfRule, platformOfUninstall, publisherSignatureSchema, sanitizeFileName, uninstallSpecSchema,
  ARCHITECTURES, PACKAGE_KINDS, PLATFORMS, type ChunkingResult, type PackageKind, type Platform
} from '../../protocol/index.js'
import { ConflictError, NotFoundError, PayloadTooLargeError, ValidationError } from '../errors.js'
import type { PackageRecord, Store } from '../store/types.js'
import type { SettingsService } from '../settings/service.js'
import type { PublisherService } from '../publishers/service.js'
import { collect } from '../store/level-store.js'
import { platformOfKind, sniffPackageType, type SniffedType } from './sniff.js'
import { parseWith } from '../validation.js'

export const packageMetadataSchema = z.object({
  name: nameSchema,
  version: z.string().trim().min(1).max(100),
  description: z.string().max(4000).optional(),
  publisher: z.string().max(200).optional(),
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
  publisherSignature: publisherSignatureSchema.optional()
}).strict()

export type PackageMetadata = z.infer<typeof packageMetadataSchema>

/** An edit of a package's metadata: fields present replace the package's; `null` removes an optional one. */
export const packagePatchSchema = z.object({
  name: nameSchema.optional(),
  version: z.string().trim().min(1).max(100).optional(),
  description: z.string().max(4000).nullable().optional(),
  publisher: z.string().max(200).nullable().optional(),
  kind: z.enum(PACKAGE_KINDS).optional(),
  platform: z.enum(PLATFORMS).optional(),
  arch: z.enum(ARCHITECTURES).optional(),
  detection: detectionRuleSchema.nullable().optional(),
  exitCodes: exitCodeMapSchema.nullable().optional(),
  uninstall: uninstallSpecSchema.nullable().optional(),
  selfService: z.boolean().optional()
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
  shell: ['linux', 'macos']
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
        if (chunk.index === 0) this.sniffed = sniffPackageType(chunk.bytes, this.fileName)
        const storing = this.service.content.put(chunk.bytes, chunk.sha256, { sync: false, hashedByCaller: true })
        this.storing = storing
        const { created } = await storing
        if (created) this.created.add(chunk.sha256)
      }
    })
    try {
      await pipeline(file, chunker)
    } catch (error) {
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
    return await this.service.commitUpload(this, record, metadata.publisherSignature)
  }

  /** Removes the chunks this upload created that nothing else refers to. */
  async abort (): Promise<void> {
    this.aborted = true
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
    for (const field of ['description', 'publisher', 'detection', 'exitCodes', 'uninstall'] as const) {
      if (patch[field] === null) delete next[field]
      else if (patch[field] !== undefined) (next as unknown as Record<string, unknown>)[field] = patch[field]
    }
    if (next.exitCodes !== undefined && Object.keys(next.exitCodes).length === 0) delete next.exitCodes
    checkPackageConsistency(next)
    await this.store.write([{ type: 'put', collection: 'packages', key: id, value: next }])
    return next
  }

  /** Deletes the package record and every chunk no other package uses. */
  async delete (id: string): Promise<PackageRecord> {
    const record = await this.get(id)
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
  async collectGarbage (): Promise<number> {
    const referenced = new Set<string>()
    for await (const record of this.store.collections.packages.values()) for (const chunk of record.chunks) referenced.add(chunk)
    let removed = 0
    for await (const chunk of this.content.list()) {
      if (!referenced.has(chunk) && await this.content.delete(chunk)) removed++
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
    return parseWith(packageMetadataSchema, decoded, 'metadata')
  }
}
