import { createHash } from 'node:crypto'
import { z } from 'zod'
import { randomId, randomSecret } from '../../protocol/index.js'
import { ConflictError, ForbiddenError, NotFoundError, UnauthorizedError } from '../errors.js'
import type { EnrollmentToken, OperatorRole, OperatorToken, Store } from '../store/types.js'
import { collect } from '../store/level-store.js'
import { label } from '../../protocol/text.js'

export function hashSecret (secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

export const OPERATOR_ROLES: readonly OperatorRole[] = ['admin', 'operator', 'viewer']

const ROLE_RANK: Record<OperatorRole, number> = { viewer: 0, operator: 1, admin: 2 }

/** Who made a request: an operator with a role, or an enrolled device. */
export type Principal =
  | { kind: 'operator', tokenId: string, name: string, role: OperatorRole }
  | { kind: 'device', deviceId: string }

export function requireRole (principal: Principal | undefined, role: OperatorRole): Extract<Principal, { kind: 'operator' }> {
  if (principal === undefined) throw new UnauthorizedError()
  if (principal.kind !== 'operator') throw new ForbiddenError('this route is for operators')
  if (ROLE_RANK[principal.role] < ROLE_RANK[role]) throw new ForbiddenError(`the ${principal.role} role may not do this; ${role} is needed`)
  return principal
}

export const operatorTokenRequestSchema = z.object({
  name: z.string().trim().min(1).max(100).regex(/^[\w.@+-][\w .@+-]*$/, 'letters, digits, spaces and . @ + - _ only'),
  role: z.enum(['admin', 'operator', 'viewer']),
  /** Seconds until the token stops working; absent: until revoked. */
  expiresInSeconds: z.number().int().min(60).max(5 * 365 * 24 * 3600).optional()
}).strict()

export type OperatorTokenRequest = z.infer<typeof operatorTokenRequestSchema>

/** What an operator token looks like from outside: never its hash. */
export type OperatorTokenView = Omit<OperatorToken, 'hash'> & { active: boolean }

export const enrollmentTokenRequestSchema = z.object({
  /** Seconds until the token expires. @default 7 days */
  expiresInSeconds: z.number().int().min(60).max(365 * 24 * 3600).optional(),
  maxUses: z.number().int().min(1).max(1_000_000).optional(),
  site: label(z.string().trim().min(1).max(100)).optional(),
  groups: z.array(label(z.string().trim().min(1).max(100))).max(100).optional()
}).strict()

export type EnrollmentTokenRequest = z.infer<typeof enrollmentTokenRequestSchema>

const DEFAULT_ENROLLMENT_TOKEN_SECONDS = 7 * 24 * 3600

export class TokenService {
  private readonly store: Store
  private readonly now: () => number

  constructor (init: { store: Store, now?: () => number }) {
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  /** Creates the first admin token when there is none; returns its secret. */
  async bootstrapAdmin (): Promise<string | undefined> {
    for await (const token of this.store.collections.operatorTokens.values({ limit: 1 })) {
      void token
      return undefined
    }
    return (await this.createOperatorToken({ name: 'admin', role: 'admin' }, 'bootstrap')).secret
  }

  private isActive (token: OperatorToken): boolean {
    return token.revokedAt === undefined && (token.expiresAt === undefined || Date.parse(token.expiresAt) > this.now())
  }

  view (token: OperatorToken): OperatorTokenView {
    const { hash, ...visible } = token
    void hash
    return { ...visible, active: this.isActive(token) }
  }

  /** Creates an operator token; its secret is returned here and never again. Names are unique among active tokens, so the audit log reads clearly. */
  async createOperatorToken (request: OperatorTokenRequest, createdBy: string): Promise<{ token: OperatorToken, secret: string }> {
    for (const existing of await this.listOperatorTokens()) {
      if (existing.name === request.name && this.isActive(existing)) throw new ConflictError('token-name-taken', `an active token is already named ${request.name}`)
    }
    const secret = randomSecret('mdo')
    const now = this.now()
    const token: OperatorToken = { id: randomId('tok'), name: request.name, role: request.role, hash: hashSecret(secret), createdAt: new Date(now).toISOString(), createdBy }
    if (request.expiresInSeconds !== undefined) token.expiresAt = new Date(now + request.expiresInSeconds * 1000).toISOString()
    await this.store.write([{ type: 'put', collection: 'operatorTokens', key: token.hash, value: token }])
    return { token, secret }
  }

  async listOperatorTokens (): Promise<OperatorToken[]> {
    const tokens = await collect(this.store.collections.operatorTokens.values())
    return tokens.sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  /**
   * Revokes a token: from the next request on it fails. The last active admin
   * token cannot be revoked, so the coordinator is never left without one.
   */
  async revokeOperatorToken (id: string, revokedBy: string): Promise<OperatorToken> {
    const tokens = await this.listOperatorTokens()
    const token = tokens.find(candidate => candidate.id === id)
    if (token === undefined) throw new NotFoundError('token', id)
    if (token.revokedAt !== undefined) return token
    if (token.role === 'admin' && this.isActive(token) && !tokens.some(other => other.id !== id && other.role === 'admin' && this.isActive(other))) {
      throw new ConflictError('last-admin-token', 'this is the last active admin token; create another admin token first')
    }
    const revoked: OperatorToken = { ...token, revokedAt: new Date(this.now()).toISOString(), revokedBy }
    await this.store.write([{ type: 'put', collection: 'operatorTokens', key: token.hash, value: revoked }])
    return revoked
  }

  /** Resolves an operator secret to its principal; undefined when it is not an operator token. Read from the store on every request, so a revocation holds at once. */
  async authenticateOperator (secret: string): Promise<Principal | undefined> {
    const hash = hashSecret(secret)
    const token = await this.store.collections.operatorTokens.get(hash)
    if (token === undefined) return undefined
    if (token.revokedAt !== undefined) throw new UnauthorizedError('this token has been revoked', 'token-revoked')
    if (token.expiresAt !== undefined && Date.parse(token.expiresAt) <= this.now()) throw new UnauthorizedError('this token has expired', 'token-expired')
    return { kind: 'operator', tokenId: token.id, name: token.name, role: token.role }
  }

  async createEnrollmentToken (request: EnrollmentTokenRequest, createdBy: string): Promise<{ token: EnrollmentToken, secret: string }> {
    const secret = randomSecret('mde')
    const now = this.now()
    const token: EnrollmentToken = {
      id: randomId('enr'),
      hash: hashSecret(secret),
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + (request.expiresInSeconds ?? DEFAULT_ENROLLMENT_TOKEN_SECONDS) * 1000).toISOString(),
      uses: 0,
      createdBy
    }
    if (request.maxUses !== undefined) token.maxUses = request.maxUses
    if (request.site !== undefined) token.site = request.site
    if (request.groups !== undefined) token.groups = request.groups
    await this.store.write([{ type: 'put', collection: 'enrollmentTokens', key: token.hash, value: token }])
    return { token, secret }
  }

  async listEnrollmentTokens (): Promise<EnrollmentToken[]> {
    const tokens = await collect(this.store.collections.enrollmentTokens.values())
    return tokens.sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  /** What an enrollment token looks like from outside: never its hash; whether it still enrolls. */
  enrollmentView (token: EnrollmentToken): Omit<EnrollmentToken, 'hash'> & { active: boolean } {
    const { hash, ...visible } = token
    void hash
    const active = token.revokedAt === undefined &&
      (token.expiresAt === undefined || Date.parse(token.expiresAt) > this.now()) &&
      (token.maxUses === undefined || token.uses < token.maxUses)
    return { ...visible, active }
  }

  /** Revokes an enrollment token: no device enrolls with it any more (devices enrolled with it stay). */
  async revokeEnrollmentToken (id: string): Promise<EnrollmentToken> {
    const token = (await this.listEnrollmentTokens()).find(candidate => candidate.id === id)
    if (token === undefined) throw new NotFoundError('enrollment token', id)
    if (token.revokedAt !== undefined) return token
    const revoked: EnrollmentToken = { ...token, revokedAt: new Date(this.now()).toISOString() }
    await this.store.write([{ type: 'put', collection: 'enrollmentTokens', key: token.hash, value: revoked }])
    return revoked
  }
}
