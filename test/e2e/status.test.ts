import '../../protocol/polyfill.js'
import test from 'ava'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import { multiaddr } from '@multiformats/multiaddr'
import { PeerGate } from '../../agent/p2p/gater.js'
import { presentCertificate } from '../helpers/certified-node.js'
import { createMeshNode } from '../../agent/p2p/node.js'
import { statusGossipOptions } from '../../agent/p2p/status-gossip.js'
import { decodeStatusMessage, encodeStatusMessage } from '../../agent/protocols/status/index.js'
import { fromBase64, fromUtf8, generateKeyPair, signStatusReceipt, signStatusRecord, toBase64, toHex, utf8, type SignedEnvelope, type StatusRecord } from '../../protocol/index.js'
import { startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess } from '../helpers/processes.js'
import { coordinatorMetrics, exactHistory, logLines, meshFormed, relayOf, rowsWhen, startSite, stopAll, uploadRandom } from '../helpers/status.js'

const KIB = 1024

test.serial('a site elects one relay that carries its records; when the relay is killed another takes over and no record is lost or stored twice', async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-status-'))
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  let agents: AgentProcess[] = []
  const restarted: AgentProcess[] = []
  try {
    agents = await startSite(coordinator, 3, 'relay')
    await meshFormed(coordinator, agents)
    const relay = await relayOf(coordinator, agents)
    const pkg = await uploadRandom(coordinator, work, 'payload.bin', 768 * KIB)
    // Capped, the downloads last a few seconds: the relay dies while records flow.
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/relay', targets: { sites: ['branch'] }, maxAttempts: 1, bandwidthKBps: 96 })
    await rowsWhen(coordinator, task.id, 3, 'every device to be downloading', row => row.state === 'downloading' && row.bytesDone > 0)
    await relay.kill()
    const survivors = agents.filter(agent => agent !== relay)
    const next = await relayOf(coordinator, survivors)
    t.not(next.deviceId, relay.deviceId)
    await rowsWhen(coordinator, task.id, 3, 'the survivors to succeed', row => row.deviceId === relay.deviceId || row.state === 'succeeded')
    // The killed relay comes back, finishes its download, and delivers what it had issued.
    restarted.push(await startAgentProcess({ coordinatorUrl: coordinator.url, hostname: 'relay-again', dataDir: relay.dataDir }))
    const rows = await rowsWhen(coordinator, task.id, 3, 'every device to succeed', row => row.state === 'succeeded')
    t.deepEqual(rows.map((row: any) => row.state), ['succeeded', 'succeeded', 'succeeded'])
    for (const agent of agents) {
      const records = await exactHistory(coordinator, task.id, agent.deviceId)
      t.is(records.at(-1).state, 'succeeded', `${agent.deviceId}: the last record is the success`)
    }
    const batches = await coordinatorMetrics(coordinator, 'meshdeploy_status_batches_total')
    t.log(`status requests: ${JSON.stringify(Object.fromEntries(batches))}`)
    t.true((batches.get('meshdeploy_status_batches_total{path="relay"}') ?? 0) > 0, 'records went up through a relay')
    t.deepEqual(await logLines(coordinator.logFile, 'refused a status record'), [], 'the coordinator refused nothing')
    const handovers = await logLines(next.logFile, 'this agent is now its site\'s status relay')
    t.true(handovers.length > 0, 'the new relay says it took over')
  } finally {
    await stopAll([...agents, ...restarted], [coordinator], work, t.passed)
  }
})

test.serial('an enrolled device turned hostile: a receipt it signs itself, a record it altered and one it signed for another device are all refused and logged; the genuine records all arrive', async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-status-'))
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  let agents: AgentProcess[] = []
  let hostile: Awaited<ReturnType<typeof createMeshNode>> | undefined
  try {
    agents = await startSite(coordinator, 2, 'honest')
    await meshFormed(coordinator, agents)
    const relay = await relayOf(coordinator, agents)
    const victim = agents.find(agent => agent !== relay)!
    // The hostile device enrols like any other, so the honest agents admit it and the coordinator takes its requests.
    const key = generateKeyPair()
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: 1 })
    const enrolled = await (await fetch(new URL('/v1/agents/enroll', coordinator.url), {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, publicKey: toHex(key.publicKey), hostname: 'hostile', platform: 'linux', arch: 'x64', site: 'branch' })
    })).json() as { deviceId: string, credential: string, certificate: SignedEnvelope, coordinatorPublicKey: string }
    const asHostile = async (method: string, path: string, body?: unknown): Promise<any> => await (await fetch(new URL(path, coordinator.url), {
      method, headers: { 'content-type': 'application/json', authorization: `Bearer ${enrolled.credential}` }, ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })).json()
    const { statusTopic } = await asHostile('GET', '/v1/agents/assignments')
    const { devices } = await coordinator.api.get('/v1/devices')
    const gate = new PeerGate({ isBanned: () => false })
    gate.setAllowed(devices.map((device: any) => device.peerId))
    hostile = await createMeshNode({ key, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, mdnsServiceTag: '_hostile._udp.local', gater: gate.connectionGater(), gossip: statusGossipOptions({ topic: statusTopic, isAllowed: () => true }) })
    await presentCertificate(hostile, gate, enrolled)
    const pubsub = (hostile.services as { pubsub: GossipSub }).pubsub
    const captured: SignedEnvelope[] = []
    pubsub.addEventListener('message', (event: CustomEvent<Message>) => {
      const message = event.detail
      if (message.type !== 'signed' || message.from.toString() !== devices.find((device: any) => device.id === victim.deviceId).peerId) return
      const decoded = decodeStatusMessage(message.data)
      if (decoded.type === 'records') captured.push(...decoded.records)
    })
    pubsub.subscribe(statusTopic)
    // The honest agents admit its connections on the certificate it enrolled with.
    await waitFor(async () => {
      for (const device of devices.filter((candidate: any) => agents.some(agent => agent.deviceId === candidate.id))) {
        await hostile!.dial(multiaddr(`${device.peerAddresses[0] as string}/p2p/${device.peerId as string}`), { signal: AbortSignal.timeout(2000) }).catch(() => {})
      }
      return pubsub.getSubscribers(statusTopic).length === 2 ? true : undefined
    }, 'the hostile device to join the status topic', 60_000, 500)

    const pkg = await uploadRandom(coordinator, work, 'payload.bin', 512 * KIB)
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/hostile', targets: { deviceIds: agents.map(agent => agent.deviceId) }, maxAttempts: 1, bandwidthKBps: 96 })
    await waitFor(async () => captured.length > 0 ? true : undefined, 'a record of the victim on the gossip', 60_000, 100)
    const genuine = captured[0]
    const claimed = JSON.parse(fromUtf8(fromBase64(genuine.payload))) as StatusRecord
    // A receipt it signed itself, naming the victim's next records: the victim must not drop them.
    const keys = Array.from({ length: 20 }, (_, index) => `${victim.deviceId}/${task.id as string}/1/${index + 1}`)
    await pubsub.publish(statusTopic, encodeStatusMessage({ type: 'receipt', receipt: signStatusReceipt({ type: 'meshdeploy.status-receipt', relayDeviceId: enrolled.deviceId, acknowledged: keys, rejected: [], at: Date.now() }, key) }))
    // As a relay: the genuine record, the same record altered, and a record for the victim signed with its own key.
    const altered = { ...genuine, payload: toBase64(utf8(JSON.stringify({ ...claimed, state: 'succeeded', bytesDone: claimed.bytesTotal }))) }
    const forged = signStatusRecord({ ...claimed, seq: claimed.seq + 100, state: 'failed', final: true, message: 'forged' }, key)
    const answer = await asHostile('POST', '/v1/agents/status', { records: [genuine, altered, forged], receipt: true })
    t.deepEqual(answer.acknowledged, [`${victim.deviceId}/${task.id as string}/${claimed.attempt}/${claimed.seq}`])
    t.deepEqual(answer.rejected.map((rejection: any) => [rejection.index, rejection.reason]), [[1, 'bad-signature'], [2, 'unknown-key']])
    t.true(answer.receipt !== undefined)

    const rows = await rowsWhen(coordinator, task.id, 2, 'both honest devices to succeed', row => row.state === 'succeeded')
    t.deepEqual(rows.map((row: any) => row.state), ['succeeded', 'succeeded'])
    for (const agent of agents) {
      const records = await exactHistory(coordinator, task.id, agent.deviceId)
      t.false(records.some((record: any) => record.message === 'forged'))
      t.is(records.at(-1).state, 'succeeded')
    }
    const refused = (await logLines(coordinator.logFile, 'refused a status record')).filter(line => line.viaDeviceId === enrolled.deviceId)
    t.deepEqual(refused.map(line => [line.reason, line.claimedDeviceId]).sort(), [['bad-signature', victim.deviceId], ['unknown-key', victim.deviceId]], 'the coordinator logged both refusals, with who sent them and whom they claimed to be')
    const gossipRefusals = await logLines(victim.logFile, 'refused status: a status gossip message refused')
    t.true(gossipRefusals.some(line => line.reason === 'receipt-does-not-verify' && line.peer === hostile!.peerId.toString()), 'the victim refused the hostile receipt and said so')
  } finally {
    await hostile?.stop()
    await stopAll(agents, [coordinator], work, t.passed)
  }
})
