import { createHash } from 'node:crypto'
import { z } from 'zod'
import { randomId, randomSecret } from '../../protocol/index.js'
import { ForbiddenError, NotFoundError, UnauthorizedError } from '../errors.js'
import type { EnrollmentToken, OperatorRole, OperatorToken, Store } from '../store/types.js'
import { collect } from '../store/level-store.js'

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

export const enrollmentTokenRequestSchema = z.object({
  /** Seconds until the token expires. @default 7 days */
  expiresInSeconds: z.number().int().min(60).max(365 * 24 * 3600).optional(),
  maxUses: z.number().int().min(1).max(1_000_000).optional(),
  site: z.string().trim().min(1).max(100).optional(),
  groups: z.array(z.string().trim().min(1).max(100)).max(100).optional()
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
    return (await this.createOperatorToken('admin', 'admin')).secret
  }

  async createOperatorToken (name: string, role: OperatorRole): Promise<{ token: OperatorToken, secret: string }> {
    const secret = randomSecret('mdo')
    const token: OperatorToken = { id: randomId('tok'), name, role, hash: hashSecret(secret), createdAt: new Date(this.now()).toISOString() }
    await this.store.write([{ type: 'put', collection: 'operatorTokens', key: token.hash, value: token }])
    return { token, secret }
  }

  async listOperatorTokens (): Promise<OperatorToken[]> {
    return await collect(this.store.collections.operatorTokens.values())
  }

  async revokeOperatorToken (id: string): Promise<OperatorToken> {
    for await (const token of this.store.collections.operatorTokens.values()) {
      if (token.id !== id) continue
      const revoked = { ...token, revokedAt: new Date(this.now()).toISOString() }
      await this.store.write([{ type: 'put', collection: 'operatorTokens', key: token.hash, value: revoked }])
      return revoked
    }
    throw new NotFoundError('token', id)
  }

  /** Resolves an operator secret to its principal; undefined when it is not an operator token. */
  async authenticateOperator (secret: string): Promise<Principal | undefined> {
    const hash = hashSecret(secret)
    const token = await this.store.collections.operatorTokens.get(hash)
    if (token === undefined) return undefined
    if (token.revokedAt !== undefined) throw new UnauthorizedError('this token has been revoked')
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
    return await collect(this.store.collections.enrollmentTokens.values())
  }
}
