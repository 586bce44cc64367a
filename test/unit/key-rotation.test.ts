import test from 'ava'
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  KEY_ROTATION_DOMAIN, followKeyRotations, generateKeyPair, keyIdOf, openKeyRotation, sealEnvelope, signKeyRotation, toHex, utf8,
  type Ed25519KeyPair, type SignedEnvelope
} from '../../protocol/index.js'
import { CoordinatorKeyring } from '../../coordinator/signing-key.js'

const ISSUED = '2026-11-21T12:00:00.000Z'

function chainOf (keys: Ed25519KeyPair[]): SignedEnvelope[] {
  return keys.slice(1).map((next, index) => signKeyRotation({
    type: 'meshdeploy.key-rotation', sequence: index + 1, previousKeyId: keyIdOf(keys[index].publicKey), newPublicKey: toHex(next.publicKey), issuedAt: ISSUED
  }, keys[index]))
}

const keys = [generateKeyPair(), generateKeyPair(), generateKeyPair()]
const chain = chainOf(keys)

test('a chain is followed from the pinned key to its end, retiring each key on the way', t => {
  const followed = followKeyRotations({ publicKey: keys[0].publicKey, sequence: 0 }, chain)
  t.is(keyIdOf(followed.pinned.publicKey), keyIdOf(keys[2].publicKey))
  t.is(followed.pinned.sequence, 2)
  t.deepEqual(followed.retiredKeyIds, [keyIdOf(keys[0].publicKey), keyIdOf(keys[1].publicKey)])
})

test('statements already followed are skipped; an up-to-date agent applies nothing', t => {
  t.is(followKeyRotations({ publicKey: keys[1].publicKey, sequence: 1 }, chain).applied.length, 1)
  t.is(followKeyRotations({ publicKey: keys[2].publicKey, sequence: 2 }, chain).applied.length, 0)
})

const refusals: Array<[string, () => unknown, string]> = [
  ['a link signed by a key other than the pinned one', () => followKeyRotations({ publicKey: generateKeyPair().publicKey, sequence: 0 }, chain), 'UnknownKeyError'],
  ['a gap in the sequence', () => followKeyRotations({ publicKey: keys[0].publicKey, sequence: 0 }, [chain[1]]), 'KeyRotationError'],
  ['something that is not a statement', () => followKeyRotations({ publicKey: keys[0].publicKey, sequence: 0 }, [{ hello: 'world' }]), 'KeyRotationError'],
  ['a statement under another domain', () => openKeyRotation(sealEnvelope('meshdeploy/manifest/v1', utf8(JSON.stringify({ type: 'meshdeploy.key-rotation', sequence: 1, previousKeyId: keyIdOf(keys[0].publicKey), newPublicKey: toHex(keys[1].publicKey), issuedAt: ISSUED })), keys[0]), keys[0].publicKey), 'WrongDomainError'],
  ['a statement whose previousKeyId is not its signer', () => openKeyRotation(sealEnvelope(KEY_ROTATION_DOMAIN, utf8(JSON.stringify({ type: 'meshdeploy.key-rotation', sequence: 1, previousKeyId: keyIdOf(keys[1].publicKey), newPublicKey: toHex(keys[2].publicKey), issuedAt: ISSUED })), keys[0]), keys[0].publicKey), 'MalformedError'],
  ['a statement naming the old key as the new one', () => openKeyRotation(sealEnvelope(KEY_ROTATION_DOMAIN, utf8(JSON.stringify({ type: 'meshdeploy.key-rotation', sequence: 1, previousKeyId: keyIdOf(keys[0].publicKey), newPublicKey: toHex(keys[0].publicKey), issuedAt: ISSUED })), keys[0]), keys[0].publicKey), 'MalformedError'],
  ['a chain longer than the bound', () => followKeyRotations({ publicKey: keys[0].publicKey, sequence: 0 }, new Array(1001).fill(chain[0])), 'TooLargeError']
]

for (const [name, attempt, error] of refusals) {
  test(`refused: ${name} (${error})`, t => {
    t.is(t.throws(attempt)?.name, error)
  })
}

test('the keyring rotates durably: the file holds the new key and the whole chain, and reopens as it was', async t => {
  const folder = await mkdtemp(join(tmpdir(), 'md-keyring-'))
  try {
    const path = join(folder, 'signing-key.json')
    const { keyring, created } = await CoordinatorKeyring.open(path)
    t.true(created)
    const first = keyring.current
    const signer = keyring.signer
    const rotation = await keyring.rotate(Date.parse(ISSUED))
    t.is(rotation.previousKeyId, first.keyId)
    t.is(keyring.sequence, 1)
    t.is(signer.keyId, keyring.current.keyId, 'holders of the signer view sign with the new key at once')
    await keyring.rotate(Date.parse(ISSUED) + 1000)
    t.is((await stat(path)).mode & 0o777, 0o600)
    t.deepEqual((await readdir(folder)).sort(), ['signing-key.json'], 'no temporary file is left behind')
    const stored = await readFile(path, 'utf8')
    t.false(stored.includes(toHex(first.secretKey)), 'a retired secret is not kept')
    const reopened = (await CoordinatorKeyring.open(path)).keyring
    t.is(reopened.current.keyId, keyring.current.keyId)
    t.is(reopened.sequence, 2)
    t.deepEqual(reopened.rotations, keyring.rotations)
    const followed = followKeyRotations({ publicKey: first.publicKey, sequence: 0 }, reopened.rotations)
    t.is(keyIdOf(followed.pinned.publicKey), reopened.current.keyId, 'an agent pinned at the first key reaches the current one')
  } finally {
    await rm(folder, { recursive: true, force: true })
  }
})

test('concurrent rotations run one after the other and leave one consistent chain', async t => {
  const folder = await mkdtemp(join(tmpdir(), 'md-keyring-'))
  try {
    const { keyring } = await CoordinatorKeyring.open(join(folder, 'signing-key.json'))
    const start = keyring.current.publicKey
    await Promise.all([keyring.rotate(1), keyring.rotate(2), keyring.rotate(3)])
    t.is(keyring.sequence, 3)
    const followed = followKeyRotations({ publicKey: start, sequence: 0 }, keyring.rotations)
    t.is(keyIdOf(followed.pinned.publicKey), keyring.current.keyId)
  } finally {
    await rm(folder, { recursive: true, force: true })
  }
})
