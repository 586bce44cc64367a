import { operatorTokenRequestSchema } from '../../auth/tokens.js'
import type { RouteModule } from '../context.js'

export const operatorTokenRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/tokens', tag: 'tokens', access: 'admin', body: operatorTokenRequestSchema,
    summary: 'Create an operator token with a role (admin, operator, viewer); the secret is in `token`, shown this once',
    responses: { 201: { description: 'the token with its secret in `token`' }, 409: { description: 'an active token already has this name' } }
  }, async ({ ctx, body, actor }) => {
    const { token, secret } = await services.tokens.createOperatorToken(body, actor)
    services.logger.info({ tokenId: token.id, name: token.name, role: token.role, by: actor }, 'operator token created')
    ctx.status = 201
    return { ...services.tokens.view(token), token: secret }
  })

  routes.add({
    method: 'get', path: '/v1/tokens', tag: 'tokens', access: 'admin',
    summary: 'List operator tokens (never their secrets): name, role, created, expiry, revocation',
    responses: { 200: { description: '{ tokens }' } }
  }, async () => ({ tokens: (await services.tokens.listOperatorTokens()).map(token => services.tokens.view(token)) }))

  routes.add({
    method: 'post', path: '/v1/tokens/:id/revoke', tag: 'tokens', access: 'admin',
    summary: 'Revoke an operator token: its next request fails. The last active admin token cannot be revoked',
    responses: { 200: { description: 'the revoked token' }, 404: { description: 'no such token' }, 409: { description: 'it is the last active admin token' } }
  }, async ({ params, actor }) => {
    const token = await services.tokens.revokeOperatorToken(params.id, actor)
    services.logger.info({ tokenId: token.id, name: token.name, by: actor }, 'operator token revoked')
    return services.tokens.view(token)
  })
}
