import test from 'ava'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { ed25519KeyPair } from '../helpers/ssh-keys.js'
import { openTestCoordinator } from '../helpers/coordinator.js'

const PASSWORD = 'Tr0ub4dor&3-horse-battery'
const PASSPHRASE = 'a passphrase nobody may read'

/** Every file under a folder, as bytes. */
async function allBytes (folder: string): Promise<Buffer> {
  const parts: Buffer[] = []
  for (const entry of await readdir(folder, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) parts.push(await readFile(join(entry.parentPath, entry.name)))
  }
  return Buffer.concat(parts)
}

test('credentials: keys and accounts go in, only id, name, type, user and fingerprint come out — not in answers, logs, the audit log or the database', async t => {
  const lines: string[] = []
  const logger = pino({ level: 'trace' }, new Writable({ write (chunk, _encoding, done) { lines.push(chunk.toString()); done() } }))
  const c = await openTestCoordinator({ logger })
  t.teardown(async () => { await c.close() })
  const admin = `Bearer ${c.adminToken}`
  const { body: operator } = await c.http.post('/v1/tokens').set('authorization', admin).send({ name: 'ops', role: 'operator' }).expect(201)
  const { body: viewer } = await c.http.post('/v1/tokens').set('authorization', admin).send({ name: 'watcher', role: 'viewer' }).expect(201)

  const key = ed25519KeyPair({ passphrase: PASSPHRASE, cipher: 'aes256-ctr', rounds: 4 })
  const keyMaterial = key.private.split('\n').slice(1, -2).join('')
  const { body: sshKey } = await c.http.post('/v1/credentials').set('authorization', admin)
    .send({ type: 'ssh-key', name: 'deploy-key', user: 'deploy', privateKey: key.private, passphrase: PASSPHRASE }).expect(201)
  t.deepEqual(Object.keys(sshKey).sort(), ['createdAt', 'createdBy', 'fingerprint', 'id', 'keyType', 'name', 'type', 'user'])
  t.like(sshKey, { name: 'deploy-key', type: 'ssh-key', user: 'deploy', keyType: 'ssh-ed25519', createdBy: 'admin' })
  const { body: account } = await c.http.post('/v1/credentials').set('authorization', admin)
    .send({ type: 'account', name: 'branch-admin', user: 'admin', password: PASSWORD }).expect(201)
  t.deepEqual(Object.keys(account).sort(), ['createdAt', 'createdBy', 'id', 'name', 'type', 'user'], 'a password has no fingerprint: nothing derived from it leaves')

  // Who may do what: admins add and remove, operators pick from the list, viewers see none.
  await c.http.post('/v1/credentials').set('authorization', `Bearer ${operator.token as string}`).send({ type: 'account', name: 'x', user: 'x', password: 'x' }).expect(403)
  await c.http.get('/v1/credentials').set('authorization', `Bearer ${viewer.token as string}`).expect(403)
  const { body: listed } = await c.http.get('/v1/credentials?limit=1').set('authorization', `Bearer ${operator.token as string}`).expect(200)
  t.deepEqual(listed.credentials, [sshKey])
  const { body: second } = await c.http.get(`/v1/credentials?limit=1&cursor=${listed.nextCursor as string}`).set('authorization', `Bearer ${operator.token as string}`).expect(200)
  t.deepEqual(second, { credentials: [account] })

  // Refusals name the reason and store nothing.
  const refused = async (body: object, status: number, reason: string): Promise<string> => {
    const { body: problem } = await c.http.post('/v1/credentials').set('authorization', admin).send(body).expect(status)
    t.is(problem.reason, reason)
    return JSON.stringify(problem)
  }
  await refused({ type: 'account', name: 'branch-admin', user: 'admin', password: 'other' }, 409, 'credential-name-taken')
  t.false((await refused({ type: 'ssh-key', name: 'k2', user: 'u', privateKey: key.private, passphrase: 'wrong passphrase' }, 422, 'private-key-locked')).includes('wrong passphrase'))
  await refused({ type: 'ssh-key', name: 'k3', user: 'u', privateKey: key.private }, 422, 'private-key-locked')
  await refused({ type: 'ssh-key', name: 'k4', user: 'u', privateKey: key.public }, 422, 'not-a-private-key')
  await refused({ type: 'account', name: 'k5', user: 'has space', password: 'x' }, 400, 'invalid-request')
  t.is((await c.http.get('/v1/credentials').set('authorization', admin)).body.credentials.length, 2)

  // The secrets open for a login, and only there.
  const opened = await c.services.credentials.secretOf(sshKey.id)
  t.deepEqual(opened?.secret, { type: 'ssh-key', privateKey: key.private, passphrase: PASSPHRASE })
  t.deepEqual((await c.services.credentials.secretOf(account.id))?.secret, { type: 'account', password: PASSWORD })
  t.is((await stat(join(c.dataDir, 'credential-key'))).mode & 0o777, 0o600)

  const { body: removed } = await c.http.delete(`/v1/credentials/${account.id as string}`).set('authorization', admin).expect(200)
  t.is(removed.id, account.id)
  await c.http.delete(`/v1/credentials/${account.id as string}`).set('authorization', admin).expect(404)
  t.is(await c.services.credentials.secretOf(account.id), undefined)

  const { body: audit } = await c.http.get('/v1/audit').set('authorization', admin).expect(200)
  const added = audit.entries.find((entry: any) => entry.route === '/v1/credentials' && entry.summary.result?.id === sshKey.id)
  t.like(added.summary.request, { type: 'ssh-key', name: 'deploy-key', user: 'deploy', privateKey: '[redacted]', passphrase: '[redacted]' })
  await c.services.store.close().catch(() => {})
  const secrets = [PASSWORD, PASSPHRASE, keyMaterial.slice(0, 40), keyMaterial.slice(-40)]
  const everything = {
    answers: JSON.stringify([sshKey, account, listed, second, removed]),
    logs: lines.join(''),
    audit: JSON.stringify(audit),
    database: (await allBytes(join(c.dataDir, 'db'))).toString('latin1')
  }
  t.true(lines.some(line => line.includes('credential added') && line.includes(sshKey.fingerprint)), 'the log names what was added')
  for (const [where, text] of Object.entries(everything)) {
    for (const secret of secrets) t.false(text.includes(secret), `nothing of the secret in the ${where}`)
  }
})
