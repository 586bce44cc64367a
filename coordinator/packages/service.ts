import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { z } from 'zod'
import {
  Chunker, ContentStore, DEFAULT_CHUNK_SIZE_BYTES, TooLargeError, detectionRuleSchema, nameSchema,
  packageIdOf, sanitizeFileName, ARCHITECTURES, PACKAGE_KINDS, PLATFORMS, type ChunkingResult
} from '../../protocol/index.js'
import { ConflictError, NotFoundError, PayloadTooLargeError, ValidationError } from '../errors.js'
import type { PackageRecord, Store } from '../store/types.js'
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
  detection: detectionRuleSchema.optional()
}).strict()

export type PackageMetadata = z.infer<typeof packageMetadataSchema>

export interface PackageServiceInit {
  store: Store
  content: ContentStore
  /** @default DEFAULT_CHUNK_SIZE_BYTES */
  chunkSizeBytes?: number
  maxPackageBytes: number
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
    return await this.service.commitUpload(this, record)
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

  constructor (init: PackageServiceInit) {
    this.store = init.store
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

  async commitUpload (upload: PackageUpload, record: PackageRecord): Promise<PackageRecord> {
    try {
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
