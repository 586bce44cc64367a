import { enrollmentTokenRequestSchema } from '../../auth/tokens.js'
import type { RouteModule } from '../context.js'

export const tokenRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/enrollment-tokens', tag: 'enrollment', access: 'operator', body: enrollmentTokenRequestSchema, bodyOptional: true,
    summary: 'Create an enrollment token (expiry, maximum uses, preset site and groups); the secret is shown once',
    responses: { 201: { description: 'the token with its secret in `token`' } }
  }, async ({ ctx, body, actor }) => {
    const { token, secret } = await services.tokens.createEnrollmentToken(body, actor)
    ctx.status = 201
    const { hash, ...visible } = token
    void hash
    return { ...visible, token: secret }
  })

  routes.add({
    method: 'get', path: '/v1/enrollment-tokens', tag: 'enrollment', access: 'operator',
    summary: 'List enrollment tokens (without their secrets)',
    responses: { 200: { description: '{ enrollmentTokens }' } }
  }, async () => ({ enrollmentTokens: (await services.tokens.listEnrollmentTokens()).map(({ hash, ...visible }) => { void hash; return visible }) }))
}
