import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import { link, open, readFile, stat, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { SealedSecret } from './types.js'

const KEY_BYTES = 32
const NONCE_BYTES = 12
/** Binds a sealed secret to the record it belongs to: it cannot be moved to another credential. */
const DOMAIN = 'meshdeploy/credential/v1'

/** The credential key file is missing its key, or a secret does not open under it; nothing is guessed. */
export class CredentialKeyError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'CredentialKeyError'
  }
}

function keyIdOf (key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16)
}

function associatedData (recordId: string): Buffer {
  return Buffer.from(`${DOMAIN}\0${recordId}`)
}

/** Creates the file only if it does not exist yet, complete or not at all: temporary file, flush, hard link, flush the folder. */
async function createFileOnce (path: string, text: string): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`
  const file = await open(temporary, 'wx', 0o600)
  try {
    await file.writeFile(text)
    await file.sync()
  } finally {
    await file.close()
  }
  try {
    await link(temporary, path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
  } finally {
    await unlink(temporary)
  }
  const folder = await open(dirname(path), 'r')
  try {
    await folder.sync()
  } finally {
    await folder.close()
  }
}

/**
 * Seals and opens credential secrets with AES-256-GCM under a key kept in
 * the coordinator's data folder (mode 0600), made at first use. The key is
 * never in the database: a copy of the database alone opens nothing.
 */
export class CredentialVault {
  readonly keyId: string
  private readonly key: Buffer

  private constructor (key: Buffer) {
    this.key = key
    this.keyId = keyIdOf(key)
  }

  /** Opens the key file, creating it (0600) if it does not exist. */
  static async open (path: string): Promise<CredentialVault> {
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
      await createFileOnce(path, randomBytes(KEY_BYTES).toString('hex') + '\n')
      text = await readFile(path, 'utf8')
    }
    const key = Buffer.from(text.trim(), 'hex')
    if (key.byteLength !== KEY_BYTES || !/^[0-9a-f]+$/.test(text.trim())) throw new CredentialKeyError(`${path} does not hold a credential key (${KEY_BYTES} bytes in hex)`)
    const mode = (await stat(path)).mode & 0o777
    if ((mode & 0o077) !== 0) throw new CredentialKeyError(`${path} is readable by others (mode ${mode.toString(8)}); chmod 600 it`)
    return new CredentialVault(key)
  }

  seal (recordId: string, secret: unknown): SealedSecret {
    const nonce = randomBytes(NONCE_BYTES)
    const cipher = createCipheriv('aes-256-gcm', this.key, nonce)
    cipher.setAAD(associatedData(recordId))
    const ciphertext = Buffer.concat([cipher.update(JSON.stringify(secret), 'utf8'), cipher.final()])
    return { keyId: this.keyId, nonce: nonce.toString('base64'), ciphertext: ciphertext.toString('base64'), tag: cipher.getAuthTag().toString('base64') }
  }

  open (recordId: string, sealed: SealedSecret): unknown {
    if (sealed.keyId !== this.keyId) throw new CredentialKeyError(`the secret of ${recordId} was sealed under another credential key (${sealed.keyId}); the key file was replaced`)
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(sealed.nonce, 'base64'))
      decipher.setAAD(associatedData(recordId))
      decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'))
      const plain = Buffer.concat([decipher.update(Buffer.from(sealed.ciphertext, 'base64')), decipher.final()])
      return JSON.parse(plain.toString('utf8'))
    } catch {
      throw new CredentialKeyError(`the secret of ${recordId} does not open: it was altered or belongs to another record`)
    }
  }
}
