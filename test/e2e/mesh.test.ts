import '../../protocol/polyfill.js'
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { readFile, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { generateKeyPair, sha256OfFile, toHex } from '../../protocol/index.js'
import { createMeshNode, mdnsServiceTagOf } from '../../agent/p2p/node.js'
import { PeerGate } from '../../agent/p2p/gater.js'
import { presentCertificate, type EnrolledTrust } from '../helpers/certified-node.js'
import * as chunk from '../../agent/protocols/chunk/index.js'
import { asError } from '../../agent/protocols/frames.js'
import { runCli, startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'

const SETTLED = new Set(['succeeded', 'already-installed', 'not-applicable', 'cancelled', 'expired'])
const CORRUPTING_AGENT = [process.execPath, '--import', 'tsx', resolve(import.meta.dirname, '../helpers/corrupting-agent.ts')]
const MIB = 1024 * 1024

async function settled (coordinator: CoordinatorProcess, taskId: string, count: number, timeoutMs = 180_000): Promise<any[]> {
  return await waitFor(async () => {
    const { devices } = await coordinator.api.get(`/v1/tasks/${taskId}/devices`)
    return devices.length === count && devices.every((row: any) => SETTLED.has(row.state) || (row.state === 'failed' && row.final === true)) ? devices : undefined
  }, `task ${taskId} to settle`, timeoutMs, 250)
}

/** Waits until every agent reports that it is connected to all the others. */
async function meshFormed (coordinator: CoordinatorProcess, agents: AgentProcess[]): Promise<void> {
  await waitFor(async () => {
    const { devices } = await coordinator.api.get('/v1/devices')
    const ours = devices.filter((device: any) => agents.some(agent => agent.deviceId === device.id))
    return ours.length === agents.length && ours.every((device: any) => device.connectedPeers >= agents.length - 1) ? true : undefined
  }, 'the site peers to connect', 60_000, 250)
}

async function randomFile (folder: string, name: string, bytes: number): Promise<string> {
  const file = join(folder, name)
  await writeFile(file, randomBytes(bytes))
  return file
}

async function site (coordinator: CoordinatorProcess, count: number, prefix: string, extra: Partial<Parameters<typeof startAgentProcess>[0]> = {}): Promise<AgentProcess[]> {
  const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: count, ...(extra.groups !== undefined ? { groups: extra.groups } : {}) })
  return await Promise.all(Array.from({ length: count }, async (_, index) => await startAgentProcess({
    coordinatorUrl: coordinator.url, enrollToken: token, hostname: `${prefix}-${index + 1}`, site: 'branch', ...extra
  })))
}

/** Uploads a package of random bytes and has one agent fetch it first, so that it holds every chunk. */
async function seeded (coordinator: CoordinatorProcess, work: string, seed: AgentProcess, sizeBytes: number): Promise<any> {
  const pkg = await coordinator.api.uploadPackage(await randomFile(work, 'payload.bin', sizeBytes), { name: 'payload', version: '1' })
  const seeding = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/a', targets: { deviceIds: [seed.deviceId] }, maxAttempts: 1 })
  const [row] = await settled(coordinator, seeding.id, 1)
  if (row.state !== 'succeeded') throw new Error(`the seed did not get the package: ${row.state as string} ${row.message as string}`)
  return pkg
}

/** Stops every process; after a pass, removes their data and logs too (they are kept to look at after a failure). */
async function stopAll (agents: AgentProcess[], coordinator: CoordinatorProcess | undefined, work: string, passed: boolean): Promise<void> {
  await Promise.all(agents.map(async agent => { await agent.stop() }))
  await coordinator?.stop()
  await rm(work, { recursive: true, force: true })
  if (!passed) return
  for (const folder of [...agents.map(agent => agent.dataDir), ...(coordinator !== undefined ? [coordinator.dataDir] : [])]) {
    await rm(folder, { recursive: true, force: true })
    await rm(`${folder}.log`, { force: true })
  }
}

test.serial('five agents of one site fetch a 64 MiB package; the origin serves about one copy', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-mesh-'))
  let finished = false
  let agents: AgentProcess[] = []
  try {
    agents = await site(coordinator, 5, 'pc')
    await meshFormed(coordinator, agents)
    const file = await randomFile(work, 'payload.bin', 64 * MIB)
    const pkg = await coordinator.api.uploadPackage(file, { name: 'payload', version: '1' })
    const before = (await coordinator.api.get('/v1/stats')).origin.bytesServed
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/payload', targets: { sites: ['branch'] }, maxAttempts: 1 })
    const rows = await settled(coordinator, task.id, 5)
    const served = (await coordinator.api.get('/v1/stats')).origin.bytesServed - before
    t.deepEqual(rows.map(row => row.state), Array(5).fill('succeeded'))
    for (const row of rows) t.is(row.bytesFromPeers + row.bytesFromOrigin, pkg.sizeBytes)
    for (const agent of agents) t.is(await sha256OfFile(join(agent.installRoot, 'srv/payload/payload.bin')), pkg.sha256)
    t.true(served <= 1.05 * pkg.sizeBytes, `the origin served ${(served / pkg.sizeBytes).toFixed(3)} copies`)
    const view = await coordinator.api.get(`/v1/tasks/${task.id}`)
    t.is(view.progress.bytesFromOrigin, rows.reduce((sum, row) => sum + row.bytesFromOrigin, 0))
    t.true(view.progress.peerShare >= 0.75, `peer share ${view.progress.peerShare}`)
    t.log(`origin served ${(served / pkg.sizeBytes).toFixed(3)} copies; peer share ${(view.progress.peerShare * 100).toFixed(0)}%`)
    finished = true
  } finally {
    await stopAll(agents, coordinator, work, finished && t.passed)
  }
})

test.serial('an agent serving corrupt chunks is banned, and every honest device completes', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-mesh-'))
  let finished = false
  const agents: AgentProcess[] = []
  try {
    const [corrupt] = await site(coordinator, 1, 'corrupt', { command: CORRUPTING_AGENT })
    agents.push(corrupt)
    // The corrupt agent gets the package first, so it holds every chunk and is every honest device's first choice.
    const pkg = await seeded(coordinator, work, corrupt, 4 * MIB)
    const honest = await site(coordinator, 3, 'honest')
    agents.push(...honest)
    await meshFormed(coordinator, agents)
    // Capped, so that the download outlasts the corrupt agent's redial after its first disconnect: a repeat is what bans it.
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/b', targets: { deviceIds: honest.map(agent => agent.deviceId) }, bandwidthKBps: 512, maxAttempts: 1 })
    const rows = await settled(coordinator, task.id, 3)
    t.deepEqual(rows.map(row => row.state), ['succeeded', 'succeeded', 'succeeded'])
    for (const agent of honest) t.is(await sha256OfFile(join(agent.installRoot, 'srv/b/payload.bin')), pkg.sha256)
    const bans = await Promise.all(honest.map(async agent => (await readFile(agent.logFile, 'utf8')).split('\n').filter(line => line.includes('peer banned') && line.includes(corrupt.event.peerId as string)).length))
    t.true(bans.some(count => count > 0), `ban log lines per honest agent: ${bans.join(', ')}`)
    for (const row of rows) t.is(row.bytesFromPeers + row.bytesFromOrigin, pkg.sizeBytes, 'only verified bytes count')
    finished = true
  } finally {
    await stopAll(agents, coordinator, work, finished && t.passed)
  }
})

test.serial('a serving peer killed mid-transfer does not stop the others', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-mesh-'))
  let finished = false
  const agents: AgentProcess[] = []
  try {
    const [seed] = await site(coordinator, 1, 'seed')
    agents.push(seed)
    const pkg = await seeded(coordinator, work, seed, 8 * MIB)
    const others = await site(coordinator, 3, 'pc')
    agents.push(...others)
    await meshFormed(coordinator, agents)
    // Capped, so that the transfer is still under way when the seed dies.
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/b', targets: { deviceIds: others.map(agent => agent.deviceId) }, bandwidthKBps: 1024, maxAttempts: 1 })
    await waitFor(async () => {
      const { devices } = await coordinator.api.get(`/v1/tasks/${task.id}/devices`)
      return devices.some((row: any) => row.bytesFromPeers >= pkg.sizeBytes / 5) ? true : undefined
    }, 'a fifth of the package from peers', 60_000, 100)
    await seed.kill()
    const rows = await settled(coordinator, task.id, 3)
    t.deepEqual(rows.map(row => row.state), ['succeeded', 'succeeded', 'succeeded'])
    for (const agent of others) t.is(await sha256OfFile(join(agent.installRoot, 'srv/b/payload.bin')), pkg.sha256)
    t.true(rows.every(row => row.bytesFromPeers > 0), 'every device had bytes from peers')
    t.log(rows.map(row => `${row.hostname}: peers ${row.bytesFromPeers}, origin ${row.bytesFromOrigin}`).join('; '))
    finished = true
  } finally {
    await stopAll(agents, coordinator, work, finished && t.passed)
  }
})

test.serial('a peer id that is not an enrolled device cannot connect; an enrolled one can', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-mesh-'))
  let finished = false
  const agents: AgentProcess[] = []
  const nodes: Array<Awaited<ReturnType<typeof createMeshNode>>> = []
  try {
    const [agent] = await site(coordinator, 1, 'pc')
    agents.push(agent)
    const address = multiaddr(`${agent.event.peerAddresses[0] as string}/p2p/${agent.event.peerId as string}`)
    const keyId = JSON.parse(await readFile(join(agent.dataDir, 'agent.json'), 'utf8')).coordinatorPublicKey
    const dialer = async (key: ReturnType<typeof generateKeyPair>, enrolled?: EnrolledTrust): Promise<Awaited<ReturnType<typeof createMeshNode>>> => {
      const gate = new PeerGate()
      gate.setAllowed([agent.event.peerId as string])
      const node = await createMeshNode({ key, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, mdnsServiceTag: mdnsServiceTagOf(keyId), gater: gate.connectionGater() })
      nodes.push(node)
      if (enrolled !== undefined) await presentCertificate(node, gate, enrolled)
      return node
    }
    const request = { packageId: 'ab'.repeat(32), index: 0, offsetBytes: 0, lengthBytes: 10 }
    const ask = async (node: Awaited<ReturnType<typeof createMeshNode>>): Promise<unknown> => {
      try {
        const connection = await node.dial(address, { signal: AbortSignal.timeout(5000) })
        const stream = await connection.newStream(chunk.PROTOCOL, { signal: AbortSignal.timeout(5000) })
        return await chunk.requestPiece(stream, request, { signal: AbortSignal.timeout(5000) })
      } catch (error) {
        // libp2p rejects some stream operations with an Event rather than an Error.
        throw asError(error)
      }
    }

    const strangerKey = generateKeyPair()
    const stranger = await dialer(strangerKey)
    const refused = await t.throwsAsync(ask(stranger))
    t.not(refused?.name, 'PieceRefusedError', `the stranger never gets as far as a request: ${refused?.name}`)
    // The agent hangs up on it: waited for, not slept on, so that a busy machine does not fail the case.
    await waitFor(async () => stranger.getConnections().length === 0 ? true : undefined, 'the agent to drop the stranger\'s connection', 10_000, 20)
    t.is(stranger.getConnections().length, 0, 'the agent dropped the connection')

    // The same key once enrolled: it presents the device certificate the coordinator signed at enrollment.
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', {})
    const trust = await fetch(`${coordinator.url}/v1/agents/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, publicKey: toHex(strangerKey.publicKey), hostname: 'now-enrolled', platform: 'linux', arch: 'x64', site: 'branch' })
    }).then(async response => { if (response.status !== 201) throw new Error(`enroll: ${response.status}`); return await response.json() as EnrolledTrust })
    await stranger.stop()
    const enrolled = await dialer(strangerKey, trust)
    const answer = await waitFor(async () => {
      try {
        await ask(enrolled)
        return 'served'
      } catch (error) {
        return error instanceof chunk.PieceRefusedError ? error.status : undefined
      }
    }, 'the enrolled peer to be admitted', 30_000, 250)
    t.is(answer, 'not-cached', 'admitted: the agent answers, and it holds no such package')
    finished = true
  } finally {
    await Promise.all(nodes.map(async node => { await node.stop() }))
    await stopAll(agents, coordinator, work, finished && t.passed)
  }
})

test.serial('a private network: the operator makes a swarm key; agents holding it share chunks, an agent with another key is refused (psk-mismatch) and fetches from the origin', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-mesh-'))
  let finished = false
  const agents: AgentProcess[] = []
  try {
    const keyFile = join(work, 'swarm.key')
    const otherKeyFile = join(work, 'other.key')
    for (const file of [keyFile, otherKeyFile]) t.is((await runCli(['agent', 'swarm-key', '--out', file], {})).code, 0)
    t.is((await stat(keyFile)).mode & 0o777, 0o600, 'readable by its owner only')
    const again = await runCli(['agent', 'swarm-key', '--out', keyFile], {})
    t.is(again.code, 1, 'an existing key file is never overwritten')
    const badKeyFile = join(work, 'bad.key')
    await writeFile(badKeyFile, 'not a key\n')
    const refused = await runCli(['agent', 'start', '--data', join(work, 'never'), '--coordinator', coordinator.url, '--insecure-http', '--swarm-key', badKeyFile], {})
    t.is(refused.code, 2)
    t.regex(refused.stderr, /a swarm key has three lines/)

    const [seed, peer] = await site(coordinator, 2, 'private', { extraArgs: ['--swarm-key', keyFile] })
    const [outsider] = await site(coordinator, 1, 'outsider', { extraArgs: ['--swarm-key', otherKeyFile] })
    agents.push(seed, peer, outsider)
    await meshFormed(coordinator, [seed, peer])
    const pkg = await seeded(coordinator, work, seed, 2 * MIB)
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/p', targets: { deviceIds: [peer.deviceId, outsider.deviceId] }, maxAttempts: 1 })
    const rows = await settled(coordinator, task.id, 2)
    const byDevice = new Map(rows.map(row => [row.deviceId, row]))
    t.like(byDevice.get(peer.deviceId), { state: 'succeeded', bytesFromPeers: pkg.sizeBytes }, 'from the seed, inside the private network')
    t.like(byDevice.get(outsider.deviceId), { state: 'succeeded', bytesFromPeers: 0, bytesFromOrigin: pkg.sizeBytes }, 'nobody would talk to it')
    const mismatches = (await Promise.all([seed, peer].map(async agent => await readFile(agent.logFile, 'utf8')))).join('\n').split('\n').filter(line => line.includes('"reason":"psk-mismatch"'))
    t.true(mismatches.length > 0, 'the private agents logged the outsider\'s refused connections')
    t.regex(mismatches[0], /not protected by this network's pre-shared key/)
    finished = true
  } finally {
    await stopAll(agents, coordinator, work, finished && t.passed)
  }
})

test.serial('a site cache fetches its site\'s packages ahead; devices then fetch from it; a cleared cache keeps only what tasks need', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-mesh-'))
  let finished = false
  const agents: AgentProcess[] = []
  try {
    // Two laptops enroll, then go offline.
    const laptops = await site(coordinator, 2, 'laptop', { groups: ['laptops'] })
    await Promise.all(laptops.map(async laptop => { await laptop.stop() }))
    const [cacheAgent] = await site(coordinator, 1, 'dp', { extraArgs: ['--site-cache'] })
    agents.push(cacheAgent)
    // The agent offers the role; an operator grants it.
    await waitFor(async () => (await coordinator.api.get(`/v1/devices/${cacheAgent.deviceId}`)).siteCacheOffered === true ? true : undefined, 'the agent to offer the site-cache role', 30_000, 100)
    t.like(await coordinator.api.patch(`/v1/devices/${cacheAgent.deviceId}`, { siteCache: true }), { siteCache: true, siteCacheOffered: true })
    const file = await randomFile(work, 'payload.bin', 4 * MIB)
    const pkg = await coordinator.api.uploadPackage(file, { name: 'payload', version: '1' })
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/payload', targets: { groups: ['laptops'] }, maxAttempts: 1 })
    t.is(task.resolvedDevices, 2, 'the site cache is not a target')
    await waitFor(async () => {
      const view = await coordinator.api.get(`/v1/devices/${cacheAgent.deviceId}`)
      return view.cache?.usedBytes >= pkg.sizeBytes ? true : undefined
    }, 'the site cache to hold the package', 60_000, 250)
    const servedBefore = (await coordinator.api.get('/v1/stats')).origin.bytesServed
    for (const laptop of laptops) agents.push(await startAgentProcess({ coordinatorUrl: coordinator.url, hostname: laptop.event.deviceId, dataDir: laptop.dataDir }))
    const rows = await settled(coordinator, task.id, 2)
    t.deepEqual(rows.map(row => row.state), ['succeeded', 'succeeded'])
    for (const row of rows) t.is(row.bytesFromPeers, pkg.sizeBytes, `${row.hostname} fetched everything from its site`)
    t.is((await coordinator.api.get('/v1/stats')).origin.bytesServed - servedBefore, 0, 'the origin served nothing more')

    // The laptop's task is over: a clear empties its cache. The site cache keeps the package while the task runs.
    for (const device of [laptops[0].deviceId, cacheAgent.deviceId]) await coordinator.api.post(`/v1/devices/${device}/clear-cache`)
    const cleared = await waitFor(async () => {
      const views = await Promise.all([laptops[0].deviceId, cacheAgent.deviceId].map(async id => await coordinator.api.get(`/v1/devices/${id}`)))
      return views.every(view => view.cacheClearedRequest === 1 && view.cache !== undefined) ? views : undefined
    }, 'both devices to clear their caches', 60_000, 250)
    await waitFor(async () => (await coordinator.api.get(`/v1/devices/${laptops[0].deviceId}`)).cache.usedBytes === 0 ? true : undefined, 'the laptop cache to be empty', 30_000, 250)
    t.true(cleared[1].cache.usedBytes >= pkg.sizeBytes, 'the site cache keeps the pinned package')
    finished = true
  } finally {
    await stopAll(agents, coordinator, work, finished && t.passed)
  }
})
