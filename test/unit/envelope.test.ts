import test from 'ava'
import {
  generateKeyPair, openEnvelope, sealEnvelope, trustKeys, utf8, toBase64, fromBase64, keyIdOf,
  type SignedEnvelope
} from '../../protocol/index.js'

const DOMAIN = 'meshdeploy/test/v1'
const key = generateKeyPair()
const payload = utf8('{"hello":"world"}')
const options = { domain: DOMAIN, keys: trustKeys(key.publicKey), maxPayloadBytes: 1024 }

function sealed (): SignedEnvelope {
  return sealEnvelope(DOMAIN, payload, key)
}

test('a sealed envelope opens to the exact payload bytes', t => {
  const opened = openEnvelope(sealed(), options)
  t.deepEqual(Buffer.from(opened.payload), Buffer.from(payload))
  t.is(opened.keyId, keyIdOf(key.publicKey))
})

test('an envelope also opens from its serialized bytes', t => {
  const opened = openEnvelope(utf8(JSON.stringify(sealed())), options)
  t.deepEqual(Buffer.from(opened.payload), Buffer.from(payload))
})

test('a tampered payload fails with BadSignatureError', t => {
  const envelope = sealed()
  const tampered = Buffer.from(fromBase64(envelope.payload))
  tampered[2] ^= 0x01
  const error = t.throws(() => openEnvelope({ ...envelope, payload: toBase64(tampered) }, options))
  t.is(error?.name, 'BadSignatureError')
})

test('a signature by an untrusted key fails with UnknownKeyError', t => {
  const other = generateKeyPair()
  const error = t.throws(() => openEnvelope(sealEnvelope(DOMAIN, payload, other), options))
  t.is(error?.name, 'UnknownKeyError')
})

test('a signature by another key under the trusted key id fails with BadSignatureError', t => {
  const other = generateKeyPair()
  const forged = { ...sealEnvelope(DOMAIN, payload, other), keyId: keyIdOf(key.publicKey) }
  const error = t.throws(() => openEnvelope(forged, options))
  t.is(error?.name, 'BadSignatureError')
})

test('an envelope made for another domain fails with WrongDomainError', t => {
  const error = t.throws(() => openEnvelope(sealEnvelope('meshdeploy/other/v1', payload, key), options))
  t.is(error?.name, 'WrongDomainError')
})

test('relabelling the domain does not carry the signature over', t => {
  const relabelled = { ...sealEnvelope('meshdeploy/other/v1', payload, key), payloadType: DOMAIN }
  const error = t.throws(() => openEnvelope(relabelled, options))
  t.is(error?.name, 'BadSignatureError')
})

test('a truncated signature fails with MalformedError', t => {
  const envelope = sealed()
  const truncated = toBase64(fromBase64(envelope.signature).subarray(0, 63))
  const error = t.throws(() => openEnvelope({ ...envelope, signature: truncated }, options))
  t.is(error?.name, 'MalformedError')
})

test('a duplicated signature fails with MalformedError', t => {
  const envelope = sealed()
  const signature = fromBase64(envelope.signature)
  const doubled = toBase64(Buffer.concat([signature, signature]))
  const error = t.throws(() => openEnvelope({ ...envelope, signature: doubled }, options))
  t.is(error?.name, 'MalformedError')
})

test('a missing field, an unknown field or bad base64 fail with MalformedError', t => {
  const envelope = sealed()
  const { signature, ...withoutSignature } = envelope
  void signature
  t.is(t.throws(() => openEnvelope(withoutSignature, options))?.name, 'MalformedError')
  t.is(t.throws(() => openEnvelope({ ...envelope, extra: 1 }, options))?.name, 'MalformedError')
  t.is(t.throws(() => openEnvelope({ ...envelope, payload: 'not base64!' }, options))?.name, 'MalformedError')
  t.is(t.throws(() => openEnvelope('{not json', options))?.name, 'MalformedError')
  t.is(t.throws(() => openEnvelope(null, options))?.name, 'MalformedError')
})

test('an oversized payload fails with TooLargeError before the signature is checked', t => {
  const big = sealEnvelope(DOMAIN, new Uint8Array(2048), key)
  t.is(t.throws(() => openEnvelope(big, options))?.name, 'TooLargeError')
})
