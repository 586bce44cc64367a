import { enrollmentTokenRequestSchema, requireRole } from '../../auth/tokens.js'
import { parseWith } from '../../validation.js'
import { readJson } from '../body.js'
import type { RouteModule } from '../context.js'

export const tokenRoutes: RouteModule = (router, services) => {
  router.post('/v1/enrollment-tokens', async ctx => {
    const principal = requireRole(ctx.state.principal, 'operator')
    const body = ctx.request.length === undefined || ctx.request.length === 0 ? {} : await readJson(ctx)
    const request = parseWith(enrollmentTokenRequestSchema, body, 'enrollment token')
    const { token, secret } = await services.tokens.createEnrollmentToken(request, principal.name)
    ctx.status = 201
    const { hash, ...visible } = token
    void hash
    ctx.body = { ...visible, token: secret }
  })

  router.get('/v1/enrollment-tokens', async ctx => {
    requireRole(ctx.state.principal, 'operator')
    ctx.body = { enrollmentTokens: (await services.tokens.listEnrollmentTokens()).map(({ hash, ...visible }) => { void hash; return visible }) }
  })
}
