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
    return { ...services.tokens.enrollmentView(token), token: secret }
  })

  routes.add({
    method: 'get', path: '/v1/enrollment-tokens', tag: 'enrollment', access: 'operator',
    summary: 'List enrollment tokens (without their secrets): expiry, uses, preset site and groups, whether each still enrolls',
    responses: { 200: { description: '{ enrollmentTokens }' } }
  }, async () => ({ enrollmentTokens: (await services.tokens.listEnrollmentTokens()).map(token => services.tokens.enrollmentView(token)) }))

  routes.add({
    method: 'post', path: '/v1/enrollment-tokens/:id/revoke', tag: 'enrollment', access: 'operator',
    summary: 'Revoke an enrollment token: no device enrolls with it any more',
    responses: { 200: { description: 'the revoked token' }, 404: { description: 'no such token' } }
  }, async ({ params }) => services.tokens.enrollmentView(await services.tokens.revokeEnrollmentToken(params.id)))
}
