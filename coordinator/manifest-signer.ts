import { MANIFEST_DOMAIN, fromBase64, sealEnvelope, type SignedEnvelope } from '../protocol/index.js'
import type { CoordinatorKeyring } from './signing-key.js'
import type { TaskRecord } from './store/types.js'

/** Re-signed manifests kept; past it the cache starts again (re-signing is cheap and deterministic). */
const MAX_CACHED_MANIFESTS = 10_000

/**
 * Hands out task manifests signed by the current coordinator key. A manifest
 * signed before a key rotation is re-signed on the way out: the same payload
 * bytes sealed with the new key (ed25519 is deterministic, so every answer
 * carries the same envelope). Nothing is rewritten in the store, so a
 * rotation never races a task change, and a crash in the middle of one
 * leaves nothing to repair.
 */
export class ManifestSigner {
  private readonly cache = new Map<string, SignedEnvelope>()

  constructor (private readonly keyring: CoordinatorKeyring) {}

  current (task: Pick<TaskRecord, 'manifest'>): SignedEnvelope {
    const key = this.keyring.current
    const stored = task.manifest
    if (stored.keyId === key.keyId) return stored
    const cacheKey = `${key.keyId}:${stored.signature}`
    let resigned = this.cache.get(cacheKey)
    if (resigned === undefined) {
      resigned = sealEnvelope(MANIFEST_DOMAIN, fromBase64(stored.payload), key)
      if (this.cache.size >= MAX_CACHED_MANIFESTS) this.cache.clear()
      this.cache.set(cacheKey, resigned)
    }
    return resigned
  }

  /** Key rotation statements from the first key to the current one, for agents to follow. */
  get rotations (): SignedEnvelope[] {
    return this.keyring.rotations
  }

  get keyId (): string {
    return this.keyring.current.keyId
  }

  get sequence (): number {
    return this.keyring.sequence
  }

  /** The organisation's first key id, which rotations do not change. */
  get originKeyId (): string {
    return this.keyring.originKeyId
  }
}
