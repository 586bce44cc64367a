import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto'
import * as ed from '@noble/ed25519'
import { fromHex, toHex } from './encoding.js'

// @noble/ed25519's synchronous API needs a SHA-512; node's is the fast one.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash('sha512').update(message).digest())

export interface Ed25519KeyPair {
  /** The 32-byte secret seed. */
  secretKey: Uint8Array
  publicKey: Uint8Array
}

export function generateKeyPair (): Ed25519KeyPair {
  const secretKey = ed.utils.randomSecretKey()
  return { secretKey, publicKey: ed.getPublicKey(secretKey) }
}

export function keyPairFromSecret (secretKey: Uint8Array): Ed25519KeyPair {
  if (secretKey.byteLength !== 32) throw new TypeError('an ed25519 secret key is 32 bytes')
  return { secretKey, publicKey: ed.getPublicKey(secretKey) }
}

const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const privateKeyObjects = new WeakMap<Uint8Array, KeyObject>()

/**
 * Signs with ed25519. Node's built-in signer gives the same (deterministic)
 * signatures as @noble/ed25519's and is several times faster: agents sign
 * every status record, and the benchmarks sign hundreds of thousands.
 */
export function sign (message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  if (secretKey.byteLength !== 32) throw new TypeError('an ed25519 secret key is 32 bytes')
  let key = privateKeyObjects.get(secretKey)
  if (key === undefined) {
    key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, secretKey]), format: 'der', type: 'pkcs8' })
    privateKeyObjects.set(secretKey, key)
  }
  return new Uint8Array(nodeSign(null, message, key))
}

const keyIds = new WeakMap<Uint8Array, string>()

/** Stable short identifier of a public key: the first 16 bytes of its SHA-256, in hex. */
export function keyIdOf (publicKey: Uint8Array): string {
  let keyId = keyIds.get(publicKey)
  if (keyId === undefined) {
    keyId = createHash('sha256').update(publicKey).digest('hex').slice(0, 32)
    // Remembered per key object: a verifier of many records by one device computes it once.
    keyIds.set(publicKey, keyId)
  }
  return keyId
}

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
const publicKeyObjects = new Map<string, KeyObject>()

const publicKeyObjectsByArray = new WeakMap<Uint8Array, KeyObject>()

function publicKeyObject (publicKey: Uint8Array): KeyObject {
  const known = publicKeyObjectsByArray.get(publicKey)
  if (known !== undefined) return known
  const cacheKey = toHex(publicKey)
  let key = publicKeyObjects.get(cacheKey)
  if (key === undefined) {
    key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' })
    if (publicKeyObjects.size > 100_000) publicKeyObjects.clear()
    publicKeyObjects.set(cacheKey, key)
  }
  publicKeyObjectsByArray.set(publicKey, key)
  return key
}

/**
 * Verifies an ed25519 signature. Node's built-in verification is the same
 * algorithm as @noble/ed25519's and about ten times faster, which matters on
 * the coordinator's status ingest path.
 */
export function verifySignature (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.byteLength !== 64 || publicKey.byteLength !== 32) return false
  try {
    return nodeVerify(null, message, publicKeyObject(publicKey), signature)
  } catch {
    return false
  }
}

/** `verifySignature` in libuv's thread pool: the calling thread goes on meanwhile. */
export async function verifySignatureAsync (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): Promise<boolean> {
  if (signature.byteLength !== 64 || publicKey.byteLength !== 32) return false
  let key: KeyObject
  try {
    key = publicKeyObject(publicKey)
  } catch {
    return false
  }
  return await new Promise(resolve => {
    nodeVerify(null, message, key, signature, (error, valid) => { resolve((error === null || error === undefined) && valid) })
  })
}

// An ed25519 peer id is the identity multihash of the protobuf-encoded public key:
// identity code 0x00, length 36, then field 1 (KeyType) = 1 (Ed25519), field 2 (Data) of 32 bytes.
const ED25519_PEER_ID_PREFIX = Uint8Array.of(0x00, 0x24, 0x08, 0x01, 0x12, 0x20)
const BASE58_ALPHABET = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'

/** Bitcoin's base58 (multibase base58btc without its `z` prefix), as libp2p writes peer ids. */
function base58btc (bytes: Uint8Array): string {
  let zeros = 0
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++
  const digits: number[] = []
  for (let index = zeros; index < bytes.length; index++) {
    let carry = bytes[index]
    for (let digit = 0; digit < digits.length; digit++) {
      carry += digits[digit] << 8
      digits[digit] = carry % 58
      carry = (carry / 58) | 0
    }
    while (carry > 0) {
      digits.push(carry % 58)
      carry = (carry / 58) | 0
    }
  }
  let text = '1'.repeat(zeros)
  for (let digit = digits.length - 1; digit >= 0; digit--) text += BASE58_ALPHABET[digits[digit]]
  return text
}

/**
 * The libp2p peer id of a device, derived from its ed25519 public key
 * (computed here so that an agent need not load libp2p's crypto to know its own id).
 */
export function peerIdOf (publicKey: Uint8Array): string {
  if (publicKey.byteLength !== 32) throw new TypeError('an ed25519 public key is 32 bytes')
  const multihash = new Uint8Array(ED25519_PEER_ID_PREFIX.byteLength + 32)
  multihash.set(ED25519_PEER_ID_PREFIX)
  multihash.set(publicKey, ED25519_PEER_ID_PREFIX.byteLength)
  return base58btc(multihash)
}

export function publicKeyFromHex (hex: string): Uint8Array {
  const key = fromHex(hex)
  if (key.byteLength !== 32) throw new TypeError('an ed25519 public key is 32 bytes')
  return key
}
