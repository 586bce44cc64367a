import { z } from 'zod'
import { addCredentialSchema, credentialListQuerySchema } from '../../credentials/service.js'
import type { RouteModule } from '../context.js'

const credentialView = z.object({
  id: z.string(),
  name: z.string(),
  type: z.enum(['ssh-key', 'account']),
  user: z.string(),
  fingerprint: z.string().optional(),
  keyType: z.string().optional(),
  createdAt: z.string(),
  createdBy: z.string()
})

/** Credentials for push installs: their secrets go in once and never come out (not in answers, logs or the audit log). */
export const credentialRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/credentials', tag: 'push installs', access: 'admin', body: addCredentialSchema, maxBodyBytes: 64 * 1024,
    summary: 'Add an SSH key (OpenSSH, PEM, PKCS#8 or PuTTY; optional passphrase) or an account (user and password) for push installs; the secret is sealed at rest and never returned',
    responses: { 201: { description: 'the credential: id, name, type, user, fingerprint', schema: credentialView }, 409: { description: 'the name is taken' }, 422: { description: 'the key cannot be used (not a private key, wrong or missing passphrase)' } }
  }, async ({ ctx, body, actor }) => {
    const credential = await services.credentials.add(body, actor)
    services.logger.info({ credentialId: credential.id, name: credential.name, type: credential.type, fingerprint: credential.fingerprint, by: actor }, 'credential added')
    ctx.status = 201
    return credential
  })

  routes.add({
    method: 'get', path: '/v1/credentials', tag: 'push installs', access: 'operator', query: credentialListQuerySchema,
    summary: 'Credentials for push installs, in the order they were added (never their secrets); page with cursor',
    responses: { 200: { description: '{ credentials, nextCursor? }' } }
  }, async ({ query }) => await services.credentials.list(query))

  routes.add({
    method: 'delete', path: '/v1/credentials/:id', tag: 'push installs', access: 'admin',
    summary: 'Remove a credential: its secret is deleted; push installs that name it report it removed',
    responses: { 200: { description: 'the removed credential' }, 404: { description: 'no such credential' } }
  }, async ({ params, actor }) => {
    const credential = await services.credentials.remove(params.id)
    services.logger.info({ credentialId: credential.id, name: credential.name, by: actor }, 'credential removed')
    return credential
  })
}
