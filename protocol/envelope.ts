import { z } from 'zod'
import { BadSignatureError, MalformedError, TooLargeError, UnknownKeyError, WrongDomainError } from './errors.js'
import { fromBase64, lengthPrefixed, toBase64, utf8 } from './encoding.js'
import { keyIdOf, sign, verifySignature, verifySignatureAsync } from './keys.js'
import type { SignatureCheck } from './verifier-pool.js'

/**
 * A signed envelope carries the exact payload bytes that were signed. The
 * signature covers a length-prefixed domain string followed by the
 * length-prefixed payload, so a signature made for one purpose (a manifest)
 * can never be replayed as another (a status record).
 */
export interface SignedEnvelope {
  /** The domain the payload was signed for, e.g. `meshdeploy/manifest/v1`. */
  payloadType: string
  /** Identifier of the signing key (see `keyIdOf`). */
  keyId: string
  /** The payload bytes, base64. */
  payload: string
  /** ed25519 signature, base64. */
  signature: string
}

export const signedEnvelopeSchema = z.object({
  payloadType: z.string().min(1).max(100),
  keyId: z.string().regex(/^[0-9a-f]{32}$/),
  payload: z.string().max(32 * 1024 * 1024),
  signature: z.string().max(200)
}).strict()

export interface SigningKey {
  secretKey: Uint8Array
  publicKey: Uint8Array
}

/** Finds the public key for a key id, or undefined when the id is not trusted. */
export type KeyResolver = (keyId: string) => Uint8Array | undefined

function signedBytes (domain: string, payload: Uint8Array): Uint8Array {
  return lengthPrefixed(utf8(domain), payload)
}

export function sealEnvelope (domain: string, payload: Uint8Array, key: SigningKey): SignedEnvelope {
  return {
    payloadType: domain,
    keyId: keyIdOf(key.publicKey),
    payload: toBase64(payload),
    signature: toBase64(sign(signedBytes(domain, payload), key.secretKey))
  }
}

export interface OpenEnvelopeOptions {
  /** The domain the caller expects. */
  domain: string
  keys: KeyResolver
  /** Upper bound on the decoded payload. */
  maxPayloadBytes: number
}

export interface OpenedEnvelope {
  payload: Uint8Array
  keyId: string
  publicKey: Uint8Array
}

/** An envelope whose shape, domain and sizes were checked, but whose signature was not yet. */
export interface DecodedEnvelope {
  domain: string
  payload: Uint8Array
  signature: Uint8Array
  keyId: string
}

/**
 * Decodes an envelope (as parsed JSON or as its serialized bytes) without
 * verifying it: the first half of `openEnvelope`, for verifiers that must
 * read the payload to learn whose key to check it with. Nothing in the
 * payload may be trusted until `verifyDecodedEnvelope` passed. Throws
 * MalformedError, TooLargeError or WrongDomainError.
 */
export function decodeEnvelope (input: unknown, options: Omit<OpenEnvelopeOptions, 'keys'>): DecodedEnvelope {
  let candidate = input
  if (input instanceof Uint8Array || typeof input === 'string') {
    const length = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength
    if (length > options.maxPayloadBytes * 4 / 3 + 1024) throw new TooLargeError('envelope', options.maxPayloadBytes)
    try {
      candidate = JSON.parse(typeof input === 'string' ? input : Buffer.from(input).toString('utf8'))
    } catch (error) {
      throw new MalformedError('envelope is not JSON', { cause: error })
    }
  }
  const parsed = signedEnvelopeSchema.safeParse(candidate)
  if (!parsed.success) throw new MalformedError(`envelope: ${z.prettifyError(parsed.error)}`)
  const envelope = parsed.data
  if (envelope.payloadType !== options.domain) throw new WrongDomainError(options.domain, envelope.payloadType)
  // Checked before decoding: an oversized payload costs nothing more than its length.
  if (envelope.payload.length > Math.ceil(options.maxPayloadBytes / 3) * 4) throw new TooLargeError('envelope payload', options.maxPayloadBytes)
  let payload: Uint8Array
  let signature: Uint8Array
  try {
    payload = fromBase64(envelope.payload)
    signature = fromBase64(envelope.signature)
  } catch (error) {
    throw new MalformedError('envelope payload or signature is not base64', { cause: error })
  }
  if (payload.byteLength > options.maxPayloadBytes) throw new TooLargeError('envelope payload', options.maxPayloadBytes)
  if (signature.byteLength !== 64) throw new MalformedError(`signature is ${signature.byteLength} bytes, expected 64`)
  return { domain: envelope.payloadType, payload, signature, keyId: envelope.keyId }
}

/** Verifies a decoded envelope's signature over its payload bytes as received. Throws UnknownKeyError or BadSignatureError. */
export function verifyDecodedEnvelope (decoded: DecodedEnvelope, keys: KeyResolver): OpenedEnvelope {
  const publicKey = keys(decoded.keyId)
  if (publicKey === undefined) throw new UnknownKeyError(decoded.keyId)
  if (!verifySignature(decoded.signature, signedBytes(decoded.domain, decoded.payload), publicKey)) throw new BadSignatureError()
  return { payload: decoded.payload, keyId: decoded.keyId, publicKey }
}

/**
 * The same, off the main thread (libuv's pool, or the `check` given, such
 * as a VerifierPool's): a verifier of many envelopes at once, the
 * coordinator's status ingest, keeps its event loop free and uses every core.
 */
export async function verifyDecodedEnvelopeAsync (decoded: DecodedEnvelope, keys: KeyResolver, check: SignatureCheck = verifySignatureAsync): Promise<OpenedEnvelope> {
  const publicKey = keys(decoded.keyId)
  if (publicKey === undefined) throw new UnknownKeyError(decoded.keyId)
  if (!await check(decoded.signature, signedBytes(decoded.domain, decoded.payload), publicKey)) throw new BadSignatureError()
  return { payload: decoded.payload, keyId: decoded.keyId, publicKey }
}

/**
 * Decodes an envelope (as parsed JSON or as its serialized bytes) and
 * verifies its signature over the payload bytes exactly as received.
 * Throws MalformedError, TooLargeError, WrongDomainError, UnknownKeyError or
 * BadSignatureError.
 */
export function openEnvelope (input: unknown, options: OpenEnvelopeOptions): OpenedEnvelope {
  return verifyDecodedEnvelope(decodeEnvelope(input, options), options.keys)
}

/** A resolver over a fixed set of public keys. */
export function trustKeys (...publicKeys: Uint8Array[]): KeyResolver {
  const byId = new Map(publicKeys.map(key => [keyIdOf(key), key]))
  return keyId => byId.get(keyId)
}
