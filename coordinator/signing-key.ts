import { EventEmitter } from 'node:events'
import { chmod, mkdir, readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { z } from 'zod'
import {
  generateKeyPair, keyIdOf, writeFileAtomic, keyPairFromSecret, fromHex, signKeyRotation, signedEnvelopeSchema, toHex,
  type KeyRotation, type SignedEnvelope, type SigningKey
} from '../protocol/index.js'

export interface CoordinatorKey extends SigningKey {
  keyId: string
  publicKeyHex: string
}

const keyFileSchema = z.object({
  secretKey: z.string().regex(/^[0-9a-f]{64}$/),
  publicKey: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  createdAt: z.string().optional(),
  /** Rotations so far; the current key is the successor named by the last one. */
  sequence: z.number().int().min(0).optional(),
  /** Every rotation statement, oldest first, each signed by the key it retired. */
  rotations: z.array(signedEnvelopeSchema).optional()
})

type KeyFile = z.infer<typeof keyFileSchema>

function keyOf (secretKey: Uint8Array): CoordinatorKey {
  const pair = keyPairFromSecret(secretKey)
  return { ...pair, keyId: keyIdOf(pair.publicKey), publicKeyHex: toHex(pair.publicKey) }
}

export interface Rotation {
  statement: KeyRotation
  envelope: SignedEnvelope
  previousKeyId: string
  key: CoordinatorKey
}

/**
 * The coordinator's manifest signing key and the chain of rotations that led
 * to it, in one file readable by its owner only. A rotation writes the new
 * secret and the statement signed by the old key in one atomic replace: after
 * a crash the file holds either the old key or the new key with its
 * statement, never one without the other. The old secret is not kept.
 */
export class CoordinatorKeyring extends EventEmitter<{ rotated: [rotation: Rotation] }> {
  private key: CoordinatorKey
  private file: KeyFile
  private rotating: Promise<unknown> = Promise.resolve()
  /**
   * The current key, read through on every use: services that sign hold this
   * view and sign with the new key as soon as a rotation is written.
   */
  readonly signer: CoordinatorKey

  private constructor (private readonly path: string, file: KeyFile) {
    super()
    // Every held assignments request listens here while it waits: as many listeners as devices waiting, not a leak.
    this.setMaxListeners(0)
    this.file = file
    this.key = keyOf(fromHex(file.secretKey))
    const keyring = this
    this.signer = {
      get secretKey () { return keyring.key.secretKey },
      get publicKey () { return keyring.key.publicKey },
      get keyId () { return keyring.key.keyId },
      get publicKeyHex () { return keyring.key.publicKeyHex }
    }
  }

  /** Loads the key file, or makes a key at first start. */
  static async open (path: string, now: () => number = Date.now): Promise<{ keyring: CoordinatorKeyring, created: boolean }> {
    let file: KeyFile
    let created = false
    try {
      file = keyFileSchema.parse(JSON.parse(await readFile(path, 'utf8')))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
      const pair = generateKeyPair()
      file = { secretKey: toHex(pair.secretKey), publicKey: toHex(pair.publicKey), createdAt: new Date(now()).toISOString(), sequence: 0, rotations: [] }
      await mkdir(dirname(path), { recursive: true, mode: 0o700 })
      await writeFileAtomic(path, JSON.stringify(file, null, 2) + '\n')
      created = true
    }
    await chmod(path, 0o600)
    return { keyring: new CoordinatorKeyring(path, file), created }
  }

  get current (): CoordinatorKey {
    return this.key
  }

  /** The organisation's first key (the one the first rotation retired, or the current one): a name that rotations do not change. */
  get originKeyId (): string {
    return this.rotations[0]?.keyId ?? this.key.keyId
  }

  /** Rotations so far: 0 until the first. */
  get sequence (): number {
    return this.file.sequence ?? 0
  }

  /** Every rotation statement, oldest first. */
  get rotations (): SignedEnvelope[] {
    return this.file.rotations ?? []
  }

  /** Makes a new key, signs its statement with the current one, and makes it current. Rotations run one at a time. */
  async rotate (now: number): Promise<Rotation> {
    const rotation = this.rotating.then(async () => await this.rotateNow(now))
    this.rotating = rotation.catch(() => {})
    return await rotation
  }

  private async rotateNow (now: number): Promise<Rotation> {
    const previous = this.key
    const next = generateKeyPair()
    const statement: KeyRotation = {
      type: 'meshdeploy.key-rotation',
      sequence: this.sequence + 1,
      previousKeyId: previous.keyId,
      newPublicKey: toHex(next.publicKey),
      issuedAt: new Date(now).toISOString()
    }
    const envelope = signKeyRotation(statement, previous)
    const file: KeyFile = {
      secretKey: toHex(next.secretKey),
      publicKey: toHex(next.publicKey),
      createdAt: statement.issuedAt,
      sequence: statement.sequence,
      rotations: [...this.rotations, envelope]
    }
    await writeFileAtomic(this.path, JSON.stringify(file, null, 2) + '\n')
    this.file = file
    this.key = keyOf(next.secretKey)
    const rotation = { statement, envelope, previousKeyId: previous.keyId, key: this.key }
    this.emit('rotated', rotation)
    return rotation
  }
}
