import { z } from 'zod'
import {
  BadSignatureError, keyIdOf, publicKeyFromHex, verifyPackageSignature, type ManifestPublisherSignature, type PublisherSignature
} from '../../protocol/index.js'
import { ApiError, ConflictError, NotFoundError } from '../errors.js'
import type { PublisherRecord, Store } from '../store/types.js'
import { collect } from '../store/level-store.js'

export const addPublisherSchema = z.object({
  name: z.string().trim().min(1).max(200),
  publicKey: z.string().regex(/^[0-9a-f]{64}$/, 'must be a 32-byte ed25519 public key in hex')
}).strict()

export type AddPublisherRequest = z.infer<typeof addPublisherSchema>

/** An upload whose publisher signature is missing or does not verify; nothing is stored. */
export class PublisherSignatureError extends ApiError {
  constructor (reason: string, message: string) {
    super(422, reason, message)
    this.name = 'PublisherSignatureError'
  }
}

/** Publisher keys registered for security verification. */
export class PublisherService {
  private readonly store: Store
  private readonly now: () => number

  constructor (init: { store: Store, now?: () => number }) {
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  async add (request: AddPublisherRequest, addedBy: string): Promise<PublisherRecord> {
    const keyId = keyIdOf(publicKeyFromHex(request.publicKey))
    const existing = await this.store.collections.publishers.get(keyId)
    if (existing !== undefined) throw new ConflictError('publisher-key-exists', `this key is already registered for ${existing.name} (${keyId})`)
    const record: PublisherRecord = { keyId, name: request.name, publicKey: request.publicKey, addedAt: new Date(this.now()).toISOString(), addedBy }
    await this.store.write([{ type: 'put', collection: 'publishers', key: keyId, value: record }])
    return record
  }

  async list (): Promise<PublisherRecord[]> {
    return (await collect(this.store.collections.publishers.values())).sort((a, b) => a.name.localeCompare(b.name))
  }

  async get (keyId: string): Promise<PublisherRecord | undefined> {
    return await this.store.collections.publishers.get(keyId)
  }

  async remove (keyId: string): Promise<PublisherRecord> {
    const record = await this.store.collections.publishers.get(keyId)
    if (record === undefined) throw new NotFoundError('publisher key', keyId)
    await this.store.write([{ type: 'del', collection: 'publishers', key: keyId }])
    return record
  }

  /**
   * Checks a publisher signature over a file's SHA-256 against the registered
   * keys; answers what the manifest will carry, or throws
   * PublisherSignatureError with the reason.
   */
  async verify (sha256: string, signature: PublisherSignature | undefined, required: boolean): Promise<ManifestPublisherSignature | undefined> {
    if (signature === undefined) {
      if (!required) return undefined
      throw new PublisherSignatureError('signature-required', 'security verification is on: the upload must carry a publisher signature (meshdeploy package sign FILE --key KEY) made with a registered publisher key')
    }
    const publisher = await this.get(signature.keyId)
    if (publisher === undefined) {
      throw new PublisherSignatureError('unknown-publisher-key', `the signature was made with key ${signature.keyId}, which is not a registered publisher key (meshdeploy publisher add)`)
    }
    try {
      verifyPackageSignature(sha256, signature, publicKeyFromHex(publisher.publicKey))
    } catch (error) {
      if (error instanceof BadSignatureError) {
        throw new PublisherSignatureError('bad-publisher-signature', `the publisher signature of ${publisher.name} does not verify for this file (SHA-256 ${sha256}): it was made for other content or damaged`)
      }
      throw error
    }
    return { ...signature, publisher: publisher.name, publicKey: publisher.publicKey }
  }
}
