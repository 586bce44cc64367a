import type { RouteModule } from '../context.js'

export const keyRoutes: RouteModule = (routes, services) => {
  const describe = (): object => ({
    keyId: services.keyring.current.keyId,
    publicKey: services.keyring.current.publicKeyHex,
    sequence: services.keyring.sequence,
    rotations: services.keyring.rotations
  })

  routes.add({
    method: 'get', path: '/v1/keys', tag: 'keys', access: 'viewer',
    summary: 'The manifest signing key: its id, public key, rotation sequence and the signed rotation statements',
    responses: { 200: { description: '{ keyId, publicKey, sequence, rotations }' } }
  }, describe)

  routes.add({
    method: 'post', path: '/v1/keys/rotate', tag: 'keys', access: 'admin',
    summary: 'Rotate the manifest signing key: a statement signed by the old key names the new one; manifests of unfinished tasks go out re-signed, and agents refuse the old key once they follow the statement',
    responses: { 200: { description: 'the new key, the retired key id and the statement' } }
  }, async ({ actor }) => {
    const rotation = await services.keyring.rotate(Date.now())
    const unfinishedTasks = services.tasks.assignable().length
    services.logger.warn({ keyId: rotation.key.keyId, previousKeyId: rotation.previousKeyId, sequence: rotation.statement.sequence, by: actor }, 'manifest signing key rotated')
    return { ...describe(), previousKeyId: rotation.previousKeyId, issuedAt: rotation.statement.issuedAt, statement: rotation.envelope, unfinishedTasks }
  })
}
