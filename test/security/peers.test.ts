/**
 * Bad input, network: peers that should not get in (not enrolled, another
 * pre-shared key or none, a device blocked or retired while connected) and
 * peers that abuse the ones they reach (stream floods, request floods,
 * malformed announcements). Each case asserts the agent's named refusal and
 * that nothing changed: no connection kept, nothing served past the limits,
 * the cache as it was, and the agent still serving and downloading honestly.
 */
import anyTest, { type TestFn } from 'ava'
import { generateSwarmKey } from '../../agent/p2p/private-network.js'
import * as chunk from '../../agent/protocols/chunk/index.js'
import { encodeFrame } from '../../agent/protocols/frames.js'
import * as have from '../../agent/protocols/have/index.js'
import type { Refusal } from '../../agent/refusals.js'
import { behaviours, type MaliciousPeer } from '../helpers/malicious-peer.js'
import { waitFor } from '../helpers/processes.js'
import { LAB_EXCHANGE, openMeshLab, type LabPackage, type MeshLab } from './mesh-lab.js'

interface Context {
  lab: MeshLab
  /** A package the agent holds, deployed once before the cases. */
  held: LabPackage
  cacheBefore: string[]
}

const test = anyTest as TestFn<Context>
/** The agent's connection limit in this lab: low, so that a flood can reach it. */
const MAX_CONNECTIONS = 8

test.before(async t => {
  t.context.lab = await openMeshLab({ node: { maxConnections: MAX_CONNECTIONS } })
  t.context.held = await t.context.lab.newPackage(4)
  const deployed = await t.context.lab.deploy(t.context.held)
  if (deployed.row.state !== 'succeeded') throw new Error(`the first deployment: ${deployed.row.state as string}`)
  t.context.cacheBefore = await t.context.lab.verifiedCache()
})

test.after.always(async t => {
  await t.context.lab?.close()
})

/** A piece of the held package, as an honest peer would ask for it. */
function pieceOf (c: Context): chunk.PieceRequest {
  return { packageId: c.held.id, index: 0, offsetBytes: 0, lengthBytes: 1024 }
}

/** The agent has no connection to the peer and no announcement channel with it. */
function isolated (lab: MeshLab, peer: MaliciousPeer): boolean {
  return !lab.agent.mesh!.node.getConnections().some(connection => connection.remotePeer.toString() === peer.peerId)
}

const ofPeer = (peer: MaliciousPeer, reason: string) => (refusal: Refusal): boolean => refusal.subject === 'peer' && refusal.peer === peer.peerId && refusal.reason === reason

interface RefusedPeerCase {
  name: string
  /** The agent's refusal reason. */
  reason: string
  start: (c: Context) => Promise<MaliciousPeer>
  /** Matches the refusal (by peer id, or by address where no id is known yet). */
  match: (peer: MaliciousPeer) => (refusal: Refusal) => boolean
}

const byAddress = (reason: string) => () => (refusal: Refusal): boolean => refusal.subject === 'peer' && refusal.reason === reason && refusal.address?.startsWith('/ip4/127.0.0.1/tcp/') === true

const refusedPeers: RefusedPeerCase[] = [
  {
    name: 'a peer that is not an enrolled device',
    reason: 'peer-not-allowed',
    start: async c => await c.lab.startPeer({ enrolled: false }),
    match: peer => ofPeer(peer, 'peer-not-allowed')
  },
  {
    name: 'an enrolled device with another pre-shared key',
    reason: 'psk-mismatch',
    start: async c => await c.lab.startPeer({ swarmKey: Buffer.from(generateSwarmKey()) }),
    match: byAddress('psk-mismatch')
  },
  {
    name: 'an enrolled device without the pre-shared key',
    reason: 'psk-mismatch',
    start: async c => await c.lab.startPeer({ swarmKey: undefined }),
    match: byAddress('psk-mismatch')
  }
]

let caseNumber = 0

for (const kase of refusedPeers) {
  test.serial(`network case ${++caseNumber}: ${kase.name} dials in → ${kase.reason}, no connection, nothing served`, async t => {
    const { lab } = t.context
    const peer = await kase.start(t.context)
    try {
      const from = lab.refusals.length
      // Whatever the dial reports (a pre-shared key mismatch may let noise start), the peer gets no answer.
      const answered = await peer.dial(lab.address, { timeoutMs: 5000 }).then(async () => await peer.flood(lab.agent.identity.peerId, pieceOf(t.context), { count: 1, concurrency: 1 }), (error: Error) => ({ [error.name]: 1 }))
      t.falsy(answered.ok, `no piece: ${JSON.stringify(answered)}`)
      t.falsy(answered['not-cached'], 'not even a refusal by status: the request never reaches the chunk protocol')
      const refusal = await lab.refusal(kase.match(peer), `a ${kase.reason} refusal`, from)
      t.truthy(refusal.message)
      await waitFor(async () => isolated(lab, peer) ? true : undefined, 'no connection on the agent\'s side', 10_000, 20)
      t.is(peer.requests.length, 0)
      t.deepEqual(await lab.verifiedCache(), t.context.cacheBefore, 'the cache is as it was')
    } finally {
      await peer.stop()
    }
  })
}

for (const action of ['block', 'retire'] as const) {
  test.serial(`network case ${++caseNumber}: a device ${action === 'block' ? 'blocked' : 'retired'} while connected → the agent hangs up at once and refuses its redials (peer-not-allowed)`, async t => {
    const { lab } = t.context
    const peer = await lab.startPeer()
    try {
      await lab.connect(peer, { persistent: true })
      const deviceId = (await lab.api.get('/v1/devices')).devices.find((device: any) => device.peerId === peer.peerId).id
      const from = lab.refusals.length
      await lab.api.post(`/v1/devices/${deviceId}/${action}`, { reason: 'stolen' })
      await waitFor(async () => !peer.connectedTo(lab.agent.identity.peerId) && isolated(lab, peer) ? true : undefined, 'the agent to drop the connection', 30_000, 20)
      t.false(lab.agent.mesh!.gate.allows(peer.peerId), 'off the allow-list')
      const refusal = await lab.refusal(ofPeer(peer, 'peer-not-allowed'), 'its redial refused', from)
      t.regex(refusal.message, /inbound connection refused by the gater \(not an enrolled, active device of the organisation\)/)
      t.true(isolated(lab, peer), 'the redials got nowhere')
      t.deepEqual(await lab.verifiedCache(), t.context.cacheBefore)
    } finally {
      await peer.stop()
    }
  })
}

test.serial(`network case ${++caseNumber}: a flood of idle chunk streams on one connection → at most ${chunk.MAX_INBOUND_STREAMS} open, the rest reset, the connection still serves`, async t => {
  const { lab } = t.context
  const peer = await lab.startPeer()
  try {
    await lab.connect(peer)
    const { open, refused } = await peer.openIdleStreams(lab.agent.identity.peerId, chunk.PROTOCOL, 3 * chunk.MAX_INBOUND_STREAMS)
    t.true(open <= chunk.MAX_INBOUND_STREAMS, `${open} streams stayed open`)
    t.true(refused >= 2 * chunk.MAX_INBOUND_STREAMS, `${refused} streams were reset`)
    const after = await peer.flood(lab.agent.identity.peerId, pieceOf(t.context), { count: 1, concurrency: 1 })
    t.deepEqual(after, { ok: 1 }, 'the peer is served once it behaves')
  } finally {
    await peer.stop()
  }
})

test.serial(`network case ${++caseNumber}: a flood of announcement streams → at most ${have.MAX_INBOUND_STREAMS} open`, async t => {
  const { lab } = t.context
  const peer = await lab.startPeer()
  try {
    await lab.connect(peer)
    const { open } = await peer.openIdleStreams(lab.agent.identity.peerId, have.PROTOCOL, 10)
    t.true(open <= have.MAX_INBOUND_STREAMS, `${open} streams stayed open`)
  } finally {
    await peer.stop()
  }
})

test.serial(`network case ${++caseNumber}: a request flood → rate-limited answers with a wait, then disconnected (request-flood) and suspended (peer-suspended); other peers unaffected`, async t => {
  const { lab } = t.context
  const peer = await lab.startPeer()
  const bystander = await lab.startPeer()
  try {
    await lab.connect(peer, { persistent: true })
    await lab.connect(bystander)
    const from = lab.refusals.length
    const outcome = await peer.flood(lab.agent.identity.peerId, pieceOf(t.context), { count: 400, concurrency: 8 })
    t.true((outcome.ok ?? 0) >= LAB_EXCHANGE.requestBurst! && (outcome.ok ?? 0) < 200, `served within the budget: ${JSON.stringify(outcome)}`)
    t.true((outcome['rate-limited'] ?? 0) >= LAB_EXCHANGE.refusalsBeforeDisconnect!, 'told to wait')
    const cutOff = Object.entries(outcome).filter(([key]) => !['ok', 'rate-limited'].includes(key)).reduce((sum, [, count]) => sum + count, 0)
    t.true(cutOff > 0, 'then cut off')
    const limited = await lab.refusal(ofPeer(peer, 'rate-limited'), 'a rate-limited refusal', from)
    t.regex(limited.message, /over its request budget; told to wait \d+ ms/)
    await lab.refusal(ofPeer(peer, 'request-flood'), 'the disconnect', from)
    const suspended = await lab.refusal(ofPeer(peer, 'peer-suspended'), 'its redial refused', from)
    t.regex(suspended.message, /suspended for flooding/)
    t.true(isolated(lab, peer))
    // Answers still on their way when the connection is cut never reach the peer: the agent reports at least what the peer saw.
    t.true(lab.refusals.slice(from).filter(ofPeer(peer, 'rate-limited')).length >= (outcome['rate-limited'] ?? 0), 'every refusal is reported (the log writes the first and counts the rest)')
    t.deepEqual(await bystander.flood(lab.agent.identity.peerId, pieceOf(t.context), { count: 5, concurrency: 1 }), { ok: 5 }, 'another peer is served as before')
  } finally {
    await peer.stop()
    await bystander.stop()
  }
})

test.serial(`network case ${++caseNumber}: a connection flood of ${2 * MAX_CONNECTIONS} enrolled peers → the agent keeps at most ${MAX_CONNECTIONS} connections; a peer can connect once they leave`, async t => {
  const { lab } = t.context
  const flood = await Promise.all(Array.from({ length: 2 * MAX_CONNECTIONS }, async () => await lab.startPeer()))
  try {
    await Promise.all(flood.map(async peer => { await peer.dial(lab.address).catch(() => {}) }))
    // libp2p refuses what arrives at the limit; the agent closes what a burst pushed past it (connection-limit).
    const held = await waitFor(async () => {
      const kept = flood.filter(peer => peer.connectedTo(lab.agent.identity.peerId)).length
      return kept <= MAX_CONNECTIONS && lab.agent.mesh!.node.getConnections().length <= MAX_CONNECTIONS ? kept : undefined
    }, 'the agent to hold its limit', 30_000, 50)
    await new Promise(resolve => setTimeout(resolve, 500))
    t.true(lab.agent.mesh!.node.getConnections().length <= MAX_CONNECTIONS, `${lab.agent.mesh!.node.getConnections().length} connections`)
    t.true(held > 0 && held <= MAX_CONNECTIONS, `${held} flood peers connected`)
  } finally {
    await Promise.all(flood.map(async peer => { await peer.stop() }))
  }
  await waitFor(async () => lab.agent.mesh!.node.getConnections().length === 0 ? true : undefined, 'the flood\'s connections to close', 30_000, 50)
  const latecomer = await lab.startPeer()
  try {
    await lab.connect(latecomer)
    t.deepEqual(await latecomer.flood(lab.agent.identity.peerId, pieceOf(t.context), { count: 1, concurrency: 1 }), { ok: 1 })
  } finally {
    await latecomer.stop()
  }
})

test.serial(`network case ${++caseNumber}: a malformed announcement → malformed-announcement, disconnected`, async t => {
  const { lab } = t.context
  const peer = await lab.startPeer()
  try {
    await lab.connect(peer)
    const from = lab.refusals.length
    const valid = have.encodeHaveMessage({ type: 'have', packageId: t.context.held.id, index: 0 })
    await peer.sendRawAnnouncement(lab.agent.identity.peerId, encodeFrame(Uint8Array.from([...valid, 0xff])).subarray())
    const refusal = await lab.refusal(ofPeer(peer, 'malformed-announcement'), 'the refusal', from)
    t.regex(refusal.message, /MalformedHaveMessageError: have carries a 4-byte index/)
    await waitFor(async () => isolated(lab, peer) ? true : undefined, 'the agent to hang up', 10_000, 20)
  } finally {
    await peer.stop()
  }
})

test.serial(`network case ${++caseNumber}: an announcement frame claiming 3 GiB → malformed-announcement before it is buffered, disconnected`, async t => {
  const { lab } = t.context
  const peer = await lab.startPeer()
  try {
    await lab.connect(peer)
    const from = lab.refusals.length
    await peer.sendRawAnnouncement(lab.agent.identity.peerId, Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x0c, 1, 2, 3]))
    const refusal = await lab.refusal(ofPeer(peer, 'malformed-announcement'), 'the refusal', from)
    t.regex(refusal.message, /FrameTooLargeError: a frame of 3221225472 bytes/)
    await waitFor(async () => isolated(lab, peer) ? true : undefined, 'the agent to hang up', 10_000, 20)
  } finally {
    await peer.stop()
  }
})

test.serial('control: after every case, an honest peer still serves a download to the agent', async t => {
  const { lab } = t.context
  const pkg = await lab.newPackage(4)
  const peer = await lab.startPeer({ pkg: { id: pkg.id, chunks: pkg.chunks }, behaviour: behaviours.honest })
  try {
    await lab.connect(peer)
    const deployed = await lab.deploy(pkg)
    t.is(deployed.row.state, 'succeeded')
    t.is(deployed.row.bytesFromPeers, pkg.sizeBytes)
  } finally {
    await peer.stop()
  }
})
