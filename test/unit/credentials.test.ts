import test from 'ava'
import { generateKeyPairSync } from 'node:crypto'
import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ed25519KeyPair } from '../helpers/ssh-keys.js'
import { inspectPrivateKey, PrivateKeyError, sshFingerprint } from '../../coordinator/credentials/ssh-keys.js'
import { CredentialKeyError, CredentialVault } from '../../coordinator/credentials/vault.js'
import { tempFolder } from '../helpers/temp.js'

test('the vault makes its key once (0600), seals per record, and opens only what it sealed for that record', async t => {
  const folder = await tempFolder(t, 'md-vault-')
  const path = join(folder, 'credential-key')
  const vault = await CredentialVault.open(path)
  t.is((await stat(path)).mode & 0o777, 0o600)
  const again = await CredentialVault.open(path)
  t.is(again.keyId, vault.keyId, 'the same key on the next start')

  const sealed = vault.seal('cred-1', { type: 'account', password: 'correct horse battery staple' })
  t.false(JSON.stringify(sealed).includes('horse'))
  t.deepEqual(again.open('cred-1', sealed), { type: 'account', password: 'correct horse battery staple' })
  t.not(vault.seal('cred-1', { a: 1 }).nonce, vault.seal('cred-1', { a: 1 }).nonce, 'a fresh nonce every time')
  t.throws(() => vault.open('cred-2', sealed), { instanceOf: CredentialKeyError, message: /altered or belongs to another record/ }, 'bound to its record')
  const flipped = Buffer.from(sealed.ciphertext, 'base64')
  flipped[0] ^= 1
  t.throws(() => vault.open('cred-1', { ...sealed, ciphertext: flipped.toString('base64') }), { instanceOf: CredentialKeyError })

  const otherPath = join(folder, 'other-key')
  const other = await CredentialVault.open(otherPath)
  t.throws(() => other.open('cred-1', sealed), { instanceOf: CredentialKeyError, message: /sealed under another credential key/ })
  await chmod(otherPath, 0o644)
  await t.throwsAsync(CredentialVault.open(otherPath), { instanceOf: CredentialKeyError, message: /readable by others/ })
  await writeFile(otherPath, 'not a key\n', { mode: 0o600 })
  await t.throwsAsync(CredentialVault.open(otherPath), { instanceOf: CredentialKeyError, message: /does not hold a credential key/ })
  t.regex(await readFile(path, 'utf8'), /^[0-9a-f]{64}\n$/)
})

test('private keys in OpenSSH (with a passphrase), PEM (encrypted too) and PKCS#8 open; the fingerprint is ssh-keygen\'s', t => {
  const openssh = ed25519KeyPair({ passphrase: 'open sesame', cipher: 'aes256-ctr', rounds: 4 })
  const inspected = inspectPrivateKey(openssh.private, 'open sesame')
  t.like(inspected, { keyType: 'ssh-ed25519', format: 'openssh' })
  const publicBlob = Buffer.from(openssh.public.split(' ')[1], 'base64')
  t.is(inspected.fingerprint, sshFingerprint(publicBlob))
  t.regex(inspected.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/)

  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pem = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString()
  t.like(inspectPrivateKey(pem), { keyType: 'ssh-rsa', format: 'pem' })
  const encryptedPem = rsa.privateKey.export({ type: 'pkcs1', format: 'pem', cipher: 'aes-128-cbc', passphrase: 'pem pass' }).toString()
  t.is(inspectPrivateKey(encryptedPem, 'pem pass').fingerprint, inspectPrivateKey(pem).fingerprint)
  const pkcs8 = rsa.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'p8 pass' }).toString()
  const converted = inspectPrivateKey(pkcs8, 'p8 pass')
  t.is(converted.format, 'pkcs8')
  t.is(converted.fingerprint, inspectPrivateKey(pem).fingerprint, 'the same key, whatever its container')
  t.true(converted.privateKey.startsWith('-----BEGIN RSA PRIVATE KEY-----'), 'stored as the SSH client reads it')
})

test('unusable keys are refused with a reason that never quotes the key', t => {
  const openssh = ed25519KeyPair({ passphrase: 'open sesame', cipher: 'aes256-ctr', rounds: 4 })
  const body = openssh.private.split('\n')[2]
  for (const [text, passphrase, reason] of [
    [openssh.private, undefined, 'private-key-locked'],
    [openssh.private, 'wrong', 'private-key-locked'],
    ['hello', undefined, 'not-a-private-key'],
    [`-----BEGIN OPENSSH PRIVATE KEY-----\n${body}\n-----END OPENSSH PRIVATE KEY-----\n`, 'open sesame', 'unsupported-private-key']
  ] as const) {
    const error = t.throws(() => inspectPrivateKey(text, passphrase), { instanceOf: PrivateKeyError })
    t.is(error.reason, reason)
    t.false(error.message.includes(body.slice(0, 16)))
  }
  const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  t.is(t.throws(() => inspectPrivateKey(ed), { instanceOf: PrivateKeyError }).reason, 'unsupported-private-key')
})
