import { z } from 'zod'
import { BadSignatureError, MalformedError } from './errors.js'
import { fromBase64, fromHex, lengthPrefixed, SHA256_HEX, toBase64, utf8 } from './encoding.js'
import { keyIdOf, sign, verifySignature } from './keys.js'

/**
 * A publisher signs a package file's SHA-256 with its ed25519 key, behind a
 * domain prefix so that the signature can never be taken for anything else.
 * The coordinator checks it at upload against the registered publisher keys
 * (with security verification on), and the agent checks it again against the
 * file it assembled before installing.
 */
export const PUBLISHER_SIGNATURE_DOMAIN = 'meshdeploy/publisher-signature/v1'

export const publisherSignatureSchema = z.object({
  /** Key id of the publisher key (see keyIdOf). */
  keyId: z.string().regex(/^[0-9a-f]{32}$/, 'must be a publisher key id (32 hex digits)'),
  /** ed25519 signature, base64. */
  signature: z.string().regex(/^[A-Za-z0-9+/]{86}==$/, 'must be a base64 ed25519 signature')
}).strict()

export type PublisherSignature = z.infer<typeof publisherSignatureSchema>

/** What a manifest carries: the signature with the key that made it and its publisher's name. */
export const manifestPublisherSignatureSchema = publisherSignatureSchema.extend({
  publisher: z.string().min(1).max(200),
  publicKey: z.string().regex(/^[0-9a-f]{64}$/)
}).strict()

export type ManifestPublisherSignature = z.infer<typeof manifestPublisherSignatureSchema>

function signedBytes (sha256: string): Uint8Array {
  if (!SHA256_HEX.test(sha256)) throw new MalformedError('a package hash is 64 lowercase hex digits')
  return lengthPrefixed(utf8(PUBLISHER_SIGNATURE_DOMAIN), fromHex(sha256))
}

/** Signs a package file's SHA-256 (what `meshdeploy package sign` does offline). */
export function signPackageHash (sha256: string, key: { secretKey: Uint8Array, publicKey: Uint8Array }): PublisherSignature {
  return { keyId: keyIdOf(key.publicKey), signature: toBase64(sign(signedBytes(sha256), key.secretKey)) }
}

/** Verifies a publisher signature over a file's SHA-256; throws BadSignatureError. */
export function verifyPackageSignature (sha256: string, signature: PublisherSignature, publicKey: Uint8Array): void {
  if (keyIdOf(publicKey) !== signature.keyId) throw new BadSignatureError(`the signature names key ${signature.keyId}, not ${keyIdOf(publicKey)}`)
  let bytes: Uint8Array
  try {
    bytes = fromBase64(signature.signature)
  } catch {
    throw new BadSignatureError('the publisher signature is not base64')
  }
  if (!verifySignature(bytes, signedBytes(sha256), publicKey)) throw new BadSignatureError(`the publisher signature does not verify for SHA-256 ${sha256}`)
}
