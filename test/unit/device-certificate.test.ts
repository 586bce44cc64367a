import test from 'ava'
import {
  DEVICE_CERTIFICATE_DOMAIN, generateKeyPair, openDeviceCertificate, peerIdOf, sealEnvelope, signDeviceCertificate, trustKeys, utf8, type DeviceCertificate
} from '../../protocol/index.js'
import { PeerGate } from '../../agent/p2p/gater.js'

const coordinator = generateKeyPair()
const device = generateKeyPair()
const peerId = peerIdOf(device.publicKey)
const NOW = Date.parse('2026-12-05T06:00:00.000Z')
const statement: DeviceCertificate = {
  type: 'meshdeploy.device-certificate',
  deviceId: 'dev-1',
  peerId,
  site: 'branch',
  issuedAt: '2026-12-04T00:00:00.000Z',
  expiresAt: '2026-12-11T00:00:00.000Z'
}
const options = { keys: trustKeys(coordinator.publicKey), now: NOW, peerId }

test('a device certificate verifies for the peer it names', t => {
  t.deepEqual(openDeviceCertificate(signDeviceCertificate(statement, coordinator), options), statement)
})

const refused: Array<[string, () => unknown, string, string?]> = [
  ['another signer', () => openDeviceCertificate(signDeviceCertificate(statement, generateKeyPair()), options), 'UnknownKeyError'],
  ['expired', () => openDeviceCertificate(signDeviceCertificate(statement, coordinator), { ...options, now: Date.parse('2026-12-11T00:05:01.000Z') }), 'DeviceCertificateError', 'certificate-expired'],
  ['issued in the future', () => openDeviceCertificate(signDeviceCertificate(statement, coordinator), { ...options, now: Date.parse('2026-12-03T23:54:59.000Z') }), 'DeviceCertificateError', 'certificate-not-yet-valid'],
  ['presented by another peer', () => openDeviceCertificate(signDeviceCertificate(statement, coordinator), { ...options, peerId: peerIdOf(generateKeyPair().publicKey) }), 'DeviceCertificateError', 'certificate-peer-mismatch'],
  ['revoked', () => openDeviceCertificate(signDeviceCertificate(statement, coordinator), { ...options, isRevoked: id => id === 'dev-1' }), 'DeviceCertificateError', 'certificate-revoked'],
  ['signed for another purpose', () => openDeviceCertificate(sealEnvelope('meshdeploy/manifest/v1', utf8(JSON.stringify(statement)), coordinator), options), 'WrongDomainError'],
  ['altered after signing', () => {
    const envelope = signDeviceCertificate(statement, coordinator)
    return openDeviceCertificate({ ...envelope, payload: Buffer.from(JSON.stringify({ ...statement, site: 'hq' })).toString('base64') }, options)
  }, 'BadSignatureError'],
  ['not a certificate', () => openDeviceCertificate(sealEnvelope(DEVICE_CERTIFICATE_DOMAIN, utf8('{"type":"other"}'), coordinator), options), 'MalformedError']
]

for (const [name, open, error, reason] of refused) {
  test(`a device certificate ${name} is refused (${reason ?? error})`, t => {
    const thrown = t.throws(open)
    t.is(thrown?.name, error)
    if (reason !== undefined) t.is((thrown as Error & { reason: string }).reason, reason)
  })
}

test('the gate admits a certified peer until its certificate expires or its device is revoked; a revoked peer is refused before any exchange', async t => {
  let now = NOW
  const gate = new PeerGate({ certificates: true, now: () => now })
  t.is(gate.refusal(peerId), 'peer-not-allowed')
  t.true(gate.mayConnect(peerId), 'a connection may be tried: the certificate comes after it')
  const waiting = gate.whenAdmitted(peerId, AbortSignal.timeout(5000))
  gate.certify(peerId, statement)
  t.true(await waiting)
  t.true(gate.allows(peerId))
  t.is(gate.deviceOf(peerId), 'dev-1')
  t.deepEqual(gate.setRevoked(['dev-1']), [peerId])
  t.is(gate.refusal(peerId), 'peer-not-allowed')
  t.is(gate.connectionRefusal(peerId), 'peer-not-allowed', 'its redials are refused by the gater')
  t.deepEqual(gate.setRevoked([]), [])
  t.true(gate.allows(peerId))
  now = Date.parse(statement.expiresAt)
  t.false(gate.allows(peerId), 'expired')
  const stranger = peerIdOf(generateKeyPair().publicKey)
  const strangerWaits = gate.whenAdmitted(stranger, AbortSignal.timeout(5000))
  gate.reject(stranger)
  t.false(await strangerWaits)
})
