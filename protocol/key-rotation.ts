import { z } from 'zod'
import { openEnvelope, sealEnvelope, signedEnvelopeSchema, trustKeys, type SignedEnvelope, type SigningKey } from './envelope.js'
import { MalformedError, MeshdeployError, TooLargeError } from './errors.js'
import { fromBase64, fromHex, fromUtf8, toHex, utf8 } from './encoding.js'
import { keyIdOf } from './keys.js'

/**
 * A coordinator key rotation: a statement, signed by the key being retired,
 * that names its successor. Agents follow the chain from the key they pinned
 * at enrollment, one statement at a time, each verified against the key
 * before it; the signature has its own domain, so no manifest or status
 * signature can pass for one.
 */
export const KEY_ROTATION_DOMAIN = 'meshdeploy/key-rotation/v1'

/** A statement envelope is small; anything larger is refused unread. */
export const MAX_KEY_ROTATION_BYTES = 4096
/** Statements an agent follows in one answer. */
export const MAX_KEY_ROTATIONS = 1000

const KEY_ID = /^[0-9a-f]{32}$/

export const keyRotationSchema = z.object({
  type: z.literal('meshdeploy.key-rotation'),
  /** 1 for the first rotation; each statement's is one more than the one before. */
  sequence: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  /** The key that signs this statement and is retired by it. */
  previousKeyId: z.string().regex(KEY_ID),
  /** The successor, 32 bytes of ed25519 public key in hex. */
  newPublicKey: z.string().regex(/^[0-9a-f]{64}$/),
  issuedAt: z.iso.datetime({ offset: true })
}).strict()

export type KeyRotation = z.infer<typeof keyRotationSchema>

/** A rotation chain that does not follow on from the pinned key. */
export class KeyRotationError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'key-rotation-refused')
    this.name = 'KeyRotationError'
  }
}

export function signKeyRotation (statement: KeyRotation, retiringKey: SigningKey): SignedEnvelope {
  const parsed = keyRotationSchema.parse(statement)
  if (parsed.previousKeyId !== keyIdOf(retiringKey.publicKey)) throw new TypeError('a rotation statement is signed by the key it retires')
  return sealEnvelope(KEY_ROTATION_DOMAIN, utf8(JSON.stringify(parsed)), retiringKey)
}

/**
 * Opens a rotation statement against the one key that may have signed it.
 * Throws MalformedError, TooLargeError, WrongDomainError, UnknownKeyError or
 * BadSignatureError.
 */
export function openKeyRotation (envelope: unknown, signer: Uint8Array): KeyRotation {
  const opened = openEnvelope(envelope, { domain: KEY_ROTATION_DOMAIN, keys: trustKeys(signer), maxPayloadBytes: MAX_KEY_ROTATION_BYTES })
  let decoded: unknown
  try {
    decoded = JSON.parse(fromUtf8(opened.payload))
  } catch (error) {
    throw new MalformedError('key rotation payload is not UTF-8 JSON', { cause: error })
  }
  const parsed = keyRotationSchema.safeParse(decoded)
  if (!parsed.success) throw new MalformedError(`key rotation: ${z.prettifyError(parsed.error)}`)
  const statement = parsed.data
  if (statement.previousKeyId !== opened.keyId) throw new MalformedError('key rotation: previousKeyId is not the signing key')
  if (statement.newPublicKey === toHex(signer)) throw new MalformedError('key rotation: the new key is the old key')
  return statement
}

/** Unverified look at a statement's sequence number, only to find where the chain continues. */
function claimedSequence (envelope: unknown): number | undefined {
  const parsed = signedEnvelopeSchema.safeParse(envelope)
  if (!parsed.success || parsed.data.payload.length > MAX_KEY_ROTATION_BYTES * 2) return undefined
  try {
    const sequence = (JSON.parse(fromUtf8(fromBase64(parsed.data.payload))) as { sequence?: unknown }).sequence
    return typeof sequence === 'number' && Number.isSafeInteger(sequence) ? sequence : undefined
  } catch {
    return undefined
  }
}

export interface PinnedKey {
  publicKey: Uint8Array
  /** Rotations already followed: 0 for the key of the coordinator's first start. */
  sequence: number
}

export interface FollowedChain {
  /** The key to trust from now on. */
  pinned: PinnedKey
  /** Key ids retired by the statements applied now, oldest first. */
  retiredKeyIds: string[]
  applied: KeyRotation[]
}

/**
 * Follows a chain of rotation statements from the pinned key: statements at
 * or below the pinned sequence are skipped, the next one must be signed by
 * the pinned key, the one after by its successor, and so on. A gap, a bad
 * signature or a malformed statement throws (KeyRotationError or the
 * envelope's named error) and nothing is applied.
 */
export function followKeyRotations (pinned: PinnedKey, statements: readonly unknown[]): FollowedChain {
  if (statements.length > MAX_KEY_ROTATIONS) throw new TooLargeError('key rotation chain', MAX_KEY_ROTATIONS)
  let current = pinned
  const retiredKeyIds: string[] = []
  const applied: KeyRotation[] = []
  for (const [index, envelope] of statements.entries()) {
    const sequence = claimedSequence(envelope)
    if (sequence === undefined) throw new KeyRotationError(`statement ${index} is not a key rotation`)
    if (sequence <= current.sequence) continue
    if (sequence !== current.sequence + 1) throw new KeyRotationError(`the chain jumps from rotation ${current.sequence} to ${sequence}`)
    const statement = openKeyRotation(envelope, current.publicKey)
    retiredKeyIds.push(statement.previousKeyId)
    applied.push(statement)
    current = { publicKey: fromHex(statement.newPublicKey), sequence: statement.sequence }
  }
  return { pinned: current, retiredKeyIds, applied }
}
