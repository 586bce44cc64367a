/**
 * The device-certificate exchange between two real libp2p nodes (noise,
 * yamux, the agent's own node factory and gate) when one of them has no
 * certificate yet, as a device enrolled a moment ago: the exchange waits
 * for it instead of presenting nothing and being refused.
 */
import '../../protocol/polyfill.js'
import test from 'ava'
import type { Libp2p } from '@libp2p/interface'
import { CertificateExchange } from '../../agent/p2p/certificate-exchange.js'
import { PeerGate } from '../../agent/p2p/gater.js'
import { createMeshNode, mdnsServiceTagOf } from '../../agent/p2p/node.js'
import { generateKeyPair, peerIdOf, signDeviceCertificate, trustKeys, type Ed25519KeyPair, type SignedEnvelope } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'
import { waitFor } from '../helpers/processes.js'

const coordinator = generateKeyPair()

function certificateOf (deviceId: string, key: Ed25519KeyPair): SignedEnvelope {
  const now = Date.now()
  return signDeviceCertificate({
    type: 'meshdeploy.device-certificate',
    deviceId,
    peerId: peerIdOf(key.publicKey),
    site: 'branch',
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 3600_000).toISOString()
  }, coordinator)
}

interface Side {
  node: Libp2p
  gate: PeerGate
  exchange: CertificateExchange
  refused: string[]
  certificate?: SignedEnvelope
  peerId: string
}

async function side (deviceId: string, withCertificate: boolean, timeoutMs?: number): Promise<Side> {
  const key = generateKeyPair()
  const gate = new PeerGate({ certificates: true })
  const node = await createMeshNode({ key, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, mdnsServiceTag: mdnsServiceTagOf('test'), gater: gate.connectionGater() })
  const refused: string[] = []
  const made: Partial<Side> = { node, gate, refused, peerId: node.peerId.toString() }
  if (withCertificate) made.certificate = certificateOf(deviceId, key)
  made.exchange = new CertificateExchange({
    node,
    gate,
    certificate: () => made.certificate,
    keys: () => trustKeys(coordinator.publicKey),
    logger: silentLogger(),
    onRefused: (peer, message) => { refused.push(`${peer}: ${message}`) },
    ...(timeoutMs !== undefined ? { timeoutMs } : {})
  })
  await made.exchange.start()
  return made as Side
}

async function stopAll (...sides: Side[]): Promise<void> {
  for (const one of sides) {
    await one.exchange.stop()
    await one.node.stop()
  }
}

test('a device whose certificate arrives after its first connection waits for it: both peers admit each other and nobody is refused', async t => {
  const certified = await side('dev-a', true)
  const key = generateKeyPair()
  const gate = new PeerGate({ certificates: true })
  const node = await createMeshNode({ key, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, mdnsServiceTag: mdnsServiceTagOf('test'), gater: gate.connectionGater() })
  const refused: string[] = []
  let certificate: SignedEnvelope | undefined
  const exchange = new CertificateExchange({ node, gate, certificate: () => certificate, keys: () => trustKeys(coordinator.publicKey), logger: silentLogger(), onRefused: peer => { refused.push(peer) } })
  await exchange.start()
  const newcomer: Side = { node, gate, exchange, refused, peerId: node.peerId.toString() }
  try {
    await certified.node.dial(newcomer.node.getMultiaddrs()[0]!)
    // The newcomer checked the certified peer's certificate; its own answer waits.
    await waitFor(async () => newcomer.gate.allows(certified.peerId) ? true : undefined, 'the newcomer to admit the certified peer', 10_000, 20)
    t.false(certified.gate.allows(newcomer.peerId), 'not admitted before it presented a certificate')

    certificate = certificateOf('dev-b', key)
    exchange.renewed()
    await waitFor(async () => certified.gate.allows(newcomer.peerId) ? true : undefined, 'the certified peer to admit the newcomer', 10_000, 20)
    t.is(certified.gate.deviceOf(newcomer.peerId), 'dev-b')
    t.is(certified.node.getConnections(newcomer.node.peerId).filter(connection => connection.status === 'open').length, 1, 'the connection stayed open')
    t.deepEqual([...certified.refused, ...newcomer.refused], [])
  } finally {
    await stopAll(certified, newcomer)
  }
})

test('a device that gets no certificate in time hangs up without blaming its peer; the peer refuses it for presenting none', async t => {
  const certified = await side('dev-a', true, 1500)
  const uncertified = await side('dev-b', false, 1500)
  try {
    await certified.node.dial(uncertified.node.getMultiaddrs()[0]!)
    await waitFor(async () => certified.node.getConnections(uncertified.node.peerId).length === 0 && uncertified.node.getConnections(certified.node.peerId).length === 0 ? true : undefined, 'the connection to end', 15_000, 50)
    t.false(certified.gate.allows(uncertified.peerId))
    await waitFor(async () => certified.refused.length > 0 ? true : undefined, 'the certified peer to log its refusal', 5_000, 50)
    t.regex(certified.refused[0]!, /no device certificate exchanged/)
    t.deepEqual(uncertified.refused, [], 'the device without a certificate does not blame the peer')
  } finally {
    await stopAll(certified, uncertified)
  }
})
