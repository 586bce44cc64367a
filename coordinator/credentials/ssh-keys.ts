import { createHash, createPrivateKey } from 'node:crypto'
import ssh2 from 'ssh2'

/** A private key that cannot be used: not a key, encrypted without (or with the wrong) passphrase, a public key. The message never quotes the key. */
export class PrivateKeyError extends Error {
  readonly reason: string
  constructor (reason: string, message: string) {
    super(message)
    this.name = 'PrivateKeyError'
    this.reason = reason
  }
}

export interface InspectedKey {
  /** The key as the SSH client takes it (a PKCS#8 key is converted to PKCS#1 or SEC1). */
  privateKey: string
  /** ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, … */
  keyType: string
  /** SHA256:… as `ssh-keygen -l` prints it. */
  fingerprint: string
  format: 'openssh' | 'pem' | 'pkcs8' | 'ppk'
}

/** The SHA-256 fingerprint of an SSH public key blob, as OpenSSH prints it. */
export function sshFingerprint (publicKeyBlob: Uint8Array): string {
  return `SHA256:${createHash('sha256').update(publicKeyBlob).digest('base64').replace(/=+$/, '')}`
}

function formatOf (text: string): InspectedKey['format'] | undefined {
  if (text.includes('-----BEGIN OPENSSH PRIVATE KEY-----')) return 'openssh'
  if (/-----BEGIN (RSA|EC|DSA) PRIVATE KEY-----/.test(text)) return 'pem'
  if (/-----BEGIN (ENCRYPTED )?PRIVATE KEY-----/.test(text)) return 'pkcs8'
  if (text.startsWith('PuTTY-User-Key-File-')) return 'ppk'
  return undefined
}

/** PKCS#8 (`ssh-keygen -m PKCS8`, openssl genpkey) as the PEM forms the SSH client reads. */
function fromPkcs8 (text: string, passphrase: string | undefined): string {
  let key
  try {
    key = createPrivateKey(passphrase !== undefined ? { key: text, passphrase } : { key: text })
  } catch {
    throw new PrivateKeyError('private-key-locked', passphrase === undefined ? 'the PKCS#8 key is encrypted and needs its passphrase' : 'the passphrase does not open this PKCS#8 key')
  }
  if (key.asymmetricKeyType === 'rsa') return key.export({ type: 'pkcs1', format: 'pem' }).toString()
  if (key.asymmetricKeyType === 'ec') return key.export({ type: 'sec1', format: 'pem' }).toString()
  throw new PrivateKeyError('unsupported-private-key', `a PKCS#8 ${key.asymmetricKeyType ?? ''} key is not supported; convert it with ssh-keygen -p -f KEY (OpenSSH format)`)
}

/**
 * Checks that a private key (OpenSSH, PEM — PKCS#1 or SEC1 — PKCS#8 or
 * PuTTY) opens with the given passphrase, and tells its type and
 * fingerprint. Throws PrivateKeyError with a reason otherwise.
 */
export function inspectPrivateKey (text: string, passphrase?: string): InspectedKey {
  const format = formatOf(text)
  if (format === undefined) throw new PrivateKeyError('not-a-private-key', 'this is not a private key in OpenSSH, PEM, PKCS#8 or PuTTY format')
  const privateKey = format === 'pkcs8' ? fromPkcs8(text, passphrase) : text
  const parsed = ssh2.utils.parseKey(privateKey, format === 'pkcs8' ? undefined : passphrase)
  if (parsed instanceof Error) {
    // ssh2's messages name the problem (no passphrase, bad passphrase, unsupported cipher) and never the key's content.
    const locked = /passphrase|decrypt|integrity/i.test(parsed.message)
    throw new PrivateKeyError(locked ? 'private-key-locked' : 'unsupported-private-key', locked
      ? (passphrase === undefined ? 'the key is encrypted and needs its passphrase' : 'the passphrase does not open this key')
      : `the key cannot be read: ${parsed.message}`)
  }
  const key = Array.isArray(parsed) ? parsed[0] : parsed
  if (key === undefined || !key.isPrivateKey()) throw new PrivateKeyError('not-a-private-key', 'this is a public key; give the private key')
  return { privateKey, keyType: key.type, fingerprint: sshFingerprint(key.getPublicSSH()), format }
}
