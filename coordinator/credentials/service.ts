import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { ApiError, ConflictError, NotFoundError } from '../errors.js'
import type { Store } from '../store/types.js'
import { inspectPrivateKey, PrivateKeyError } from './ssh-keys.js'
import type { CredentialRecord, CredentialSecret, CredentialView } from './types.js'
import type { CredentialVault } from './vault.js'

/** Private keys are a few KiB; a 16,384-bit RSA key in PEM is under 13 KiB. */
export const MAX_PRIVATE_KEY_CHARS = 16 * 1024
export const MAX_PASSWORD_CHARS = 1024
/** Credentials an organisation keeps; adding past it is refused. */
export const MAX_CREDENTIALS = 10_000
export const DEFAULT_CREDENTIAL_PAGE = 100
export const MAX_CREDENTIAL_PAGE = 1000

const name = z.string().trim().min(1).max(100)
/** A POSIX user name, or a Windows one (DOMAIN\user, user@domain) for transports to come. */
const user = z.string().trim().min(1).max(256).regex(/^[^\s:/]+$/, 'a user name without spaces, colons or slashes')

export const addCredentialSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('ssh-key'),
    name,
    user,
    /** OpenSSH, PEM (PKCS#1, SEC1), PKCS#8 or PuTTY. */
    privateKey: z.string().min(1).max(MAX_PRIVATE_KEY_CHARS),
    passphrase: z.string().min(1).max(MAX_PASSWORD_CHARS).optional()
  }).strict(),
  z.object({
    type: z.literal('account'),
    name,
    user,
    password: z.string().min(1).max(MAX_PASSWORD_CHARS)
  }).strict()
])

export type AddCredentialRequest = z.infer<typeof addCredentialSchema>

export const credentialListQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(MAX_CREDENTIAL_PAGE).optional(),
  /** The `nextCursor` of the previous page. */
  cursor: z.string().min(1).max(100).optional()
}).strict()

/** A private key the coordinator cannot use; nothing is stored. */
export class UnusablePrivateKeyError extends ApiError {
  constructor (error: PrivateKeyError) {
    super(422, error.reason, error.message)
    this.name = 'UnusablePrivateKeyError'
  }
}

export function credentialView (record: CredentialRecord): CredentialView {
  const { sealed, ...view } = record
  void sealed
  return view
}

export interface CredentialServiceInit {
  store: Store
  vault: CredentialVault
  now?: () => number
}

/**
 * The accounts and SSH keys push installs log in with. Secrets are sealed
 * before they are stored and opened only for a login (`secretOf`); every
 * answer is a view without them.
 */
export class CredentialService {
  private readonly store: Store
  private readonly vault: CredentialVault
  private readonly now: () => number

  constructor (init: CredentialServiceInit) {
    this.store = init.store
    this.vault = init.vault
    this.now = init.now ?? Date.now
  }

  async add (request: AddCredentialRequest, createdBy: string): Promise<CredentialView> {
    let count = 0
    for await (const existing of this.store.collections.pushCredentials.values()) {
      if (existing.name === request.name) throw new ConflictError('credential-name-taken', `a credential is already named ${request.name}`)
      if (++count >= MAX_CREDENTIALS) throw new ConflictError('too-many-credentials', `at most ${MAX_CREDENTIALS} credentials are kept; remove some first`)
    }
    // Ids sort by creation time, so that a list pages in the order credentials were added.
    const id = `cred-${this.now().toString(36).padStart(9, '0')}-${randomBytes(4).toString('hex')}`
    let secret: CredentialSecret
    const record: Omit<CredentialRecord, 'sealed'> = { id, name: request.name, type: request.type, user: request.user, createdAt: new Date(this.now()).toISOString(), createdBy }
    if (request.type === 'ssh-key') {
      let inspected
      try {
        inspected = inspectPrivateKey(request.privateKey, request.passphrase)
      } catch (error) {
        if (error instanceof PrivateKeyError) throw new UnusablePrivateKeyError(error)
        throw error
      }
      record.fingerprint = inspected.fingerprint
      record.keyType = inspected.keyType
      secret = { type: 'ssh-key', privateKey: inspected.privateKey, ...(request.passphrase !== undefined && inspected.format !== 'pkcs8' ? { passphrase: request.passphrase } : {}) }
    } else {
      secret = { type: 'account', password: request.password }
    }
    const stored: CredentialRecord = { ...record, sealed: this.vault.seal(id, secret) }
    await this.store.write([{ type: 'put', collection: 'pushCredentials', key: id, value: stored }])
    return credentialView(stored)
  }

  /** A page of credentials in the order they were added. */
  async list (query: z.infer<typeof credentialListQuerySchema> = {}): Promise<{ credentials: CredentialView[], nextCursor?: string }> {
    const limit = query.limit ?? DEFAULT_CREDENTIAL_PAGE
    const credentials: CredentialView[] = []
    for await (const record of this.store.collections.pushCredentials.values({ limit: limit + 1, ...(query.cursor !== undefined ? { after: query.cursor } : {}) })) {
      credentials.push(credentialView(record))
    }
    if (credentials.length <= limit) return { credentials }
    credentials.pop()
    return { credentials, nextCursor: credentials[credentials.length - 1].id }
  }

  async get (id: string): Promise<CredentialView> {
    const record = await this.store.collections.pushCredentials.get(id)
    if (record === undefined) throw new NotFoundError('credential', id)
    return credentialView(record)
  }

  /** Several credentials by id, in the order asked; undefined where one does not exist (removed since). */
  async views (ids: readonly string[]): Promise<Array<CredentialView | undefined>> {
    const records = await this.store.collections.pushCredentials.getMany([...ids])
    return records.map(record => record !== undefined ? credentialView(record) : undefined)
  }

  async remove (id: string): Promise<CredentialView> {
    const record = await this.store.collections.pushCredentials.get(id)
    if (record === undefined) throw new NotFoundError('credential', id)
    await this.store.write([{ type: 'del', collection: 'pushCredentials', key: id }])
    return credentialView(record)
  }

  /** The credential and its secret, for one login; undefined when it was removed. The secret must not outlive the login. */
  async secretOf (id: string): Promise<{ credential: CredentialView, secret: CredentialSecret } | undefined> {
    const record = await this.store.collections.pushCredentials.get(id)
    if (record === undefined) return undefined
    return { credential: credentialView(record), secret: this.vault.open(id, record.sealed) as CredentialSecret }
  }
}
