import '../../protocol/polyfill.js'
import test from 'ava'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Libp2p } from '@libp2p/interface'
import { PeerGate } from '../../agent/p2p/gater.js'
import { createMeshNode } from '../../agent/p2p/node.js'
import { Libp2pStatusGossip, statusGossipOptions } from '../../agent/p2p/status-gossip.js'
import { encodeStatusMessage } from '../../agent/protocols/status/index.js'
import { generateKeyPair, peerIdOf, signStatusReceipt, signStatusRecord, toBase64, trustKeys, utf8, type Ed25519KeyPair, type StatusRecord } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'
import { until } from '../helpers/status-stub.js'

const TOPIC = 'meshdeploy/status/1/0123456789abcdef/branch'
const coordinator = generateKeyPair()

interface Node {
  key: Ed25519KeyPair
  peerId: string
  node: Libp2p
  pubsub: GossipSub
  gossip: Libp2pStatusGossip
  events: Array<[string, ...unknown[]]>
}

async function start (key: Ed25519KeyPair, allowed: string[], devices: Map<string, string>): Promise<Node> {
  const gate = new PeerGate({ isBanned: () => false })
  gate.setAllowed(allowed)
  const node = await createMeshNode({
    key,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    mdns: false,
    mdnsServiceTag: '_test._udp.local',
    gater: gate.connectionGater(),
    gossip: statusGossipOptions({ topic: TOPIC, isAllowed: peer => gate.allows(peer) })
  })
  const pubsub = (node.services as { pubsub: GossipSub }).pubsub
  const gossip = new Libp2pStatusGossip({ node, pubsub, topic: TOPIC, logger: silentLogger(), isAllowed: peer => gate.allows(peer), deviceOf: peer => devices.get(peer), coordinatorKeys: () => trustKeys(coordinator.publicKey) })
  const events: Node['events'] = []
  for (const name of ['records', 'receipt', 'heartbeat', 'refused'] as const) gossip.on(name, (...args: unknown[]) => { events.push([name, ...args]) })
  gossip.start()
  return { key, peerId: node.peerId.toString(), node, pubsub, gossip, events }
}

/** gossipsub's score of a peer (the implementation has it; the exported interface does not say so). */
function scoreOf (node: Node, peer: Node): number {
  return (node.pubsub as unknown as { getScore: (peerId: string) => number }).getScore(peer.peerId)
}

function record (deviceId: string, seq: number, state: StatusRecord['state'] = 'downloading'): StatusRecord {
  return { type: 'meshdeploy.status', deviceId, taskId: 'task-1', revision: 1, attempt: 1, seq, state, at: 1, bytesTotal: 1, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0 }
}

test('status gossip between real nodes: own records, receipts and heartbeats pass; forged records and receipts are refused and their sender graylisted', async t => {
  const keys = [generateKeyPair(), generateKeyPair()]
  const peerIds = keys.map(key => peerIdOf(key.publicKey))
  const devices = new Map([[peerIds[0], 'dev-a'], [peerIds[1], 'dev-b']])
  const [a, b] = await Promise.all(keys.map(async key => await start(key, peerIds, devices)))
  try {
    await a.node.dial(b.node.getMultiaddrs()[0])
    await until(() => a.gossip.topicPeers().includes(b.peerId) && b.gossip.topicPeers().includes(a.peerId), 'both to see the other on the topic')
    const own = signStatusRecord(record('dev-a', 1), a.key)
    t.true(await a.gossip.publish({ type: 'records', records: [own] }) > 0)
    await a.gossip.publish({ type: 'heartbeat', reachesCoordinator: true })
    const receipt = signStatusReceipt({ type: 'meshdeploy.status-receipt', relayDeviceId: 'dev-a', acknowledged: ['dev-b/task-1/1/1'], rejected: [], at: 1 }, coordinator)
    await a.gossip.publish({ type: 'receipt', receipt })
    await until(() => b.events.length >= 3, 'b to get the three messages')
    t.deepEqual(b.events.map(event => event[0]), ['records', 'heartbeat', 'receipt'])
    t.deepEqual(b.events[0], ['records', a.peerId, [own]])
    t.deepEqual(b.events[1], ['heartbeat', a.peerId, true, undefined])
    t.deepEqual((b.events[2][2] as any).acknowledged, ['dev-b/task-1/1/1'])
    t.true(scoreOf(b, a) >= 0)

    // A record naming another device, signed by the sender: it may only publish its own.
    const named = signStatusRecord(record('dev-b', 2, 'succeeded'), a.key)
    await a.pubsub.publish(TOPIC, encodeStatusMessage({ type: 'records', records: [named] }))
    await until(() => b.events.some(event => event[0] === 'refused'), 'b to refuse the forged record')
    t.regex(String(b.events.find(event => event[0] === 'refused')![2]), /names device dev-b/)
    t.false(b.events.slice(3).some(event => event[0] === 'records'), 'the forged record was not delivered')
    await until(() => scoreOf(b, a) < -80, 'the sender to be graylisted (its score below -80)')
    // gossipsub lets a peer that scored well through for up to a second after its last check.
    await new Promise(resolve => setTimeout(resolve, 1100))
    await a.gossip.publish({ type: 'records', records: [signStatusRecord(record('dev-a', 3), a.key)] })
    await a.gossip.publish({ type: 'heartbeat', reachesCoordinator: true })
    await new Promise(resolve => setTimeout(resolve, 500))
    t.is(b.events.filter(event => event[0] === 'records').length, 1, 'nothing more from a graylisted sender')
  } finally {
    await Promise.all([a, b].map(async node => { node.gossip.stop(); await node.node.stop() }))
  }
})

test('status gossip refuses a record altered after signing and a receipt not signed by the coordinator', async t => {
  const keys = [generateKeyPair(), generateKeyPair(), generateKeyPair()]
  const peerIds = keys.map(key => peerIdOf(key.publicKey))
  const [a, b, c] = await Promise.all(keys.map(async key => await start(key, peerIds, new Map())))
  try {
    await a.node.dial(b.node.getMultiaddrs()[0])
    await c.node.dial(b.node.getMultiaddrs()[0])
    await until(() => b.gossip.topicPeers().length === 2 && a.gossip.topicPeers().length === 1 && c.gossip.topicPeers().length === 1, 'the topic to form')
    const genuine = signStatusRecord(record('dev-a', 1, 'failed'), a.key)
    const altered = { ...genuine, payload: toBase64(utf8(JSON.stringify(record('dev-a', 1, 'succeeded')))) }
    await a.pubsub.publish(TOPIC, encodeStatusMessage({ type: 'records', records: [altered] }))
    const forgedReceipt = signStatusReceipt({ type: 'meshdeploy.status-receipt', relayDeviceId: 'dev-c', acknowledged: ['dev-b/task-1/1/1'], rejected: [], at: 1 }, c.key)
    await c.pubsub.publish(TOPIC, encodeStatusMessage({ type: 'receipt', receipt: forgedReceipt }))
    await until(() => b.events.filter(event => event[0] === 'refused').length === 2, 'b to refuse both')
    const reasons = b.events.filter(event => event[0] === 'refused').map(event => `${String(event[1])}: ${String(event[2])}`)
    t.true(reasons.some(reason => reason.startsWith(`${a.peerId}: record-does-not-verify`)))
    t.true(reasons.some(reason => reason.startsWith(`${c.peerId}: receipt-does-not-verify`)))
    t.false(b.events.some(event => event[0] === 'records' || event[0] === 'receipt'))
  } finally {
    await Promise.all([a, b, c].map(async node => { node.gossip.stop(); await node.node.stop() }))
  }
})
