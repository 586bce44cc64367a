import test from 'ava'
import * as ed from '@noble/ed25519'
import {
  decodeStatusRecord, fromBase64, generateKeyPair, openStatusReceipt, openStatusRecord, openStatusRecordAsync, sealEnvelope, sign, signStatusReceipt,
  signStatusRecord, STATUS_DOMAIN, statusTopicOf, toBase64, trustKeys, utf8, type StatusReceipt, type StatusRecord
} from '../../protocol/index.js'
import { decodeStatusMessage, encodeStatusMessage, MAX_MESSAGE_BYTES, MAX_RECORDS_PER_MESSAGE, recordMessages } from '../../agent/protocols/status/index.js'

const device = generateKeyPair()
const other = generateKeyPair()
const coordinator = generateKeyPair()

function record (seq: number, fields: Partial<StatusRecord> = {}): StatusRecord {
  return { type: 'meshdeploy.status', deviceId: 'dev-1', taskId: 'task-1', revision: 1, attempt: 1, seq, state: 'downloading', at: 1000, bytesTotal: 10, bytesDone: 1, bytesFromPeers: 0, bytesFromOrigin: 1, ...fields }
}

test('signatures from node\'s signer are the ed25519 signatures noble makes', t => {
  const message = utf8('the same bytes')
  t.deepEqual(Buffer.from(sign(message, device.secretKey)), Buffer.from(ed.sign(message, device.secretKey)))
})

test('a status record decoded first verifies against its device\'s key, and only that key', async t => {
  const envelope = signStatusRecord(record(1), device)
  const unverified = decodeStatusRecord(envelope)
  t.is(unverified.claimed.deviceId, 'dev-1')
  t.deepEqual(await unverified.verify(device.publicKey), record(1))
  const wrongKey = await t.throwsAsync(decodeStatusRecord(envelope).verify(other.publicKey))
  t.is(wrongKey?.name, 'UnknownKeyError')
})

test('a record signed by another device\'s key is refused, whoever it claims to be', async t => {
  const forged = signStatusRecord(record(2), other)
  const error = await t.throwsAsync(openStatusRecordAsync(forged, () => device.publicKey))
  t.is(error?.name, 'UnknownKeyError')
  // The forger also names its own key id: the signature is still checked against the claimed device's key.
  const relabelled = { ...forged, keyId: signStatusRecord(record(2), device).keyId }
  const bad = await t.throwsAsync(openStatusRecordAsync(relabelled, () => device.publicKey))
  t.is(bad?.name, 'BadSignatureError')
})

test('a record altered on the way (a relay changed its state) is refused', async t => {
  const envelope = signStatusRecord(record(3), device)
  const altered = { ...envelope, payload: toBase64(utf8(JSON.stringify(record(3, { state: 'succeeded' })))) }
  const error = await t.throwsAsync(openStatusRecordAsync(altered, () => device.publicKey))
  t.is(error?.name, 'BadSignatureError')
  t.is(t.throws(() => openStatusRecord(altered, trustKeys(device.publicKey)))?.name, 'BadSignatureError')
})

test('records out of shape are refused before any key is looked up', async t => {
  const wrongDomain = sealEnvelope('meshdeploy/manifest/v1', utf8(JSON.stringify(record(1))), device)
  t.is(t.throws(() => decodeStatusRecord(wrongDomain))?.name, 'WrongDomainError')
  const unknownField = sealEnvelope(STATUS_DOMAIN, utf8(JSON.stringify({ ...record(1), extra: true })), device)
  t.is(t.throws(() => decodeStatusRecord(unknownField))?.name, 'MalformedError')
  const huge = { ...signStatusRecord(record(1), device), payload: 'A'.repeat(64 * 1024) }
  t.is(t.throws(() => decodeStatusRecord(huge))?.name, 'TooLargeError')
  const noSignature = { ...signStatusRecord(record(1), device), signature: toBase64(new Uint8Array(10)) }
  t.is(t.throws(() => decodeStatusRecord(noSignature))?.name, 'MalformedError')
})

test('a receipt opens against the coordinator key only; one signed by a relay, or altered, is refused', t => {
  const receipt: StatusReceipt = { type: 'meshdeploy.status-receipt', relayDeviceId: 'dev-2', acknowledged: ['dev-1/task-1/1/1'], rejected: [{ key: 'dev-1/task-1/1/2', reason: 'unknown-task' }], at: 5 }
  const envelope = signStatusReceipt(receipt, coordinator)
  t.deepEqual(openStatusReceipt(envelope, trustKeys(coordinator.publicKey)), receipt)
  t.is(t.throws(() => openStatusReceipt(signStatusReceipt(receipt, device), trustKeys(coordinator.publicKey)))?.name, 'UnknownKeyError')
  const widened = toBase64(utf8(JSON.stringify({ ...receipt, acknowledged: [...receipt.acknowledged, 'dev-1/task-1/1/3'] })))
  t.is(t.throws(() => openStatusReceipt({ ...envelope, payload: widened }, trustKeys(coordinator.publicKey)))?.name, 'BadSignatureError')
  // A record signed by the coordinator key is no receipt: the domains differ.
  const asRecord = sealEnvelope(STATUS_DOMAIN, fromBase64(envelope.payload), coordinator)
  t.is(t.throws(() => openStatusReceipt(asRecord, trustKeys(coordinator.publicKey)))?.name, 'WrongDomainError')
})

test('gossip messages decode strictly and stay within their bound', t => {
  const records = [signStatusRecord(record(1), device), signStatusRecord(record(2), device)]
  for (const message of [{ type: 'records', records }, { type: 'heartbeat', reachesCoordinator: true, relay: 'peer' }, { type: 'heartbeat', reachesCoordinator: false }, { type: 'heartbeat', reachesCoordinator: true, relay: 'p'.repeat(100) }, { type: 'receipt', receipt: records[0] }] as const) {
    t.deepEqual(decodeStatusMessage(encodeStatusMessage(message)), message)
  }
  const refused = [
    utf8('not json'),
    utf8(JSON.stringify({ type: 'records', records: [] })),
    utf8(JSON.stringify({ type: 'heartbeat', reachesCoordinator: 'yes' })),
    utf8(JSON.stringify({ type: 'heartbeat', reachesCoordinator: true, extra: 1 })),
    // Heartbeats are checked without the schema: the same rules hold.
    utf8(JSON.stringify({ type: 'heartbeat' })),
    utf8(JSON.stringify({ type: 'heartbeat', reachesCoordinator: true, relay: '' })),
    utf8(JSON.stringify({ type: 'heartbeat', reachesCoordinator: true, relay: 'p'.repeat(101) })),
    utf8(JSON.stringify({ type: 'heartbeat', reachesCoordinator: true, relay: 7 })),
    utf8(JSON.stringify({ type: 'heartbeat', reachesCoordinator: null })),
    utf8(JSON.stringify([{ type: 'heartbeat', reachesCoordinator: true }])),
    utf8('null'),
    utf8(JSON.stringify({ type: 'unknown' })),
    new Uint8Array(MAX_MESSAGE_BYTES + 1)
  ]
  for (const bytes of refused) t.is(t.throws(() => decodeStatusMessage(bytes))?.name, 'MalformedStatusMessageError')
  t.is(t.throws(() => encodeStatusMessage({ type: 'records', records: Array(10).fill({ ...records[0], payload: 'A'.repeat(200_000) }) }))?.name, 'StatusMessageTooLargeError')
})

test('records are split into messages within the count and size bounds', t => {
  const records = Array.from({ length: MAX_RECORDS_PER_MESSAGE * 2 + 5 }, (_, index) => signStatusRecord(record(index + 1), device))
  const messages = recordMessages(records)
  t.is(messages.length, 3)
  t.deepEqual(messages.flatMap(message => message.records), records)
  const small = recordMessages(records.slice(0, 10), 2000)
  t.true(small.length > 1)
  for (const message of small) t.true(encodeStatusMessage(message).byteLength <= 2000)
  t.deepEqual(recordMessages([]), [])
})

test('a site\'s topic names the organisation and the site', t => {
  t.is(statusTopicOf('0123456789abcdef0123456789abcdef', 'branch'), 'meshdeploy/status/1/0123456789abcdef/branch')
})
