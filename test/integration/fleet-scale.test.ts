/**
 * One coordinator and 2,000 simulated devices over real HTTP: each enrolls
 * with its own key, reports its peer address, and holds an assignments
 * request open. The answer a device gets does not grow from 200 to 2,000
 * devices; a task for one site wakes the held requests of that site's
 * devices and no other; and a libp2p peer without a device certificate
 * cannot connect to a real agent of that fleet.
 */
import test from 'ava'
import http from 'node:http'
import { generateKeyPairSync } from 'node:crypto'
import { waitFor } from '../helpers/processes.js'
import { openMeshLab, type MeshLab } from '../security/mesh-lab.js'
import { request, type Answer } from '../../bench/scenarios/scale.js'

const SITES = ['east', 'west'] as const
const SMALL_FLEET = 200
/** Held requests opened at once. */
const HOLD_WAVE = 250
const FLEET = 2000
/** An assignments answer's bound whatever the fleet (the target). */
const MAX_ANSWER_BYTES = 16 * 1024
const UNLIMITED = { requestsPerSecond: 1_000_000, burst: 1_000_000 }

interface SimulatedDevice {
  id: string
  credential: string
  site: string
  etag?: string
}

/** A device's request, as the scale benchmark's load generator sends it. */
async function send (agent: http.Agent, base: URL, options: { method: string, path: string, credential?: string, body?: unknown, signal?: AbortSignal }): Promise<Answer> {
  return await request(agent, base, { ...options, signal: options.signal ?? AbortSignal.timeout(120_000) })
}

async function pool<T> (items: readonly T[], concurrency: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++
      await work(items[index], index)
    }
  }))
}

function publicKeyHex (): string {
  // The raw 32 bytes end the DER form of an ed25519 public key.
  return generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(-32).toString('hex')
}

let lab: MeshLab | undefined

test.after.always(async () => {
  await lab?.close()
})

test('2,000 simulated devices: answers do not grow with the fleet, a task for one site wakes only that site, an uncertified peer cannot connect', async t => {
  t.timeout(120_000)
  lab = await openMeshLab({ limits: { anonymousRate: UNLIMITED, deviceRate: UNLIMITED, operatorRate: UNLIMITED } })
  const base = new URL(lab.coordinator.url)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 })
  const holding = new http.Agent({ keepAlive: false, maxSockets: Infinity })
  t.teardown(() => { agent.destroy(); holding.destroy() })
  const services = lab.coordinator.services
  const { token } = await lab.api.post('/v1/enrollment-tokens', { maxUses: FLEET })
  const devices: SimulatedDevice[] = []

  const enroll = async (count: number): Promise<void> => {
    const from = devices.length
    await pool(Array.from({ length: count }, (_, index) => from + index), 32, async index => {
      const site = SITES[index % SITES.length]
      const enrolled = await send(agent, base, { method: 'POST', path: '/v1/agents/enroll', body: { token, publicKey: publicKeyHex(), hostname: `sim-${index}`, platform: 'linux', arch: 'x64', site } })
      if (enrolled.status !== 201) throw new Error(`enrollment ${index}: ${enrolled.status} ${enrolled.body}`)
      const { deviceId, credential } = JSON.parse(enrolled.body) as { deviceId: string, credential: string }
      const device: SimulatedDevice = { id: deviceId, credential, site }
      devices[index] = device
      // An address to hand to its site peers: each device is in its site's samples.
      const reported = await send(agent, base, { method: 'PUT', path: '/v1/agents/self', credential, body: { peerAddresses: [`/ip4/127.0.0.1/tcp/${10_000 + index}`] } })
      if (reported.status >= 300) throw new Error(`self-report ${index}: ${reported.status} ${reported.body}`)
    })
  }

  /** The largest answer among the first devices, each asked without an etag. */
  /** The reconnect spread the last answers named: it grows with the fleet, as the answer does not. */
  let spreadSeconds = 0
  const largestAnswer = async (sample: readonly SimulatedDevice[]): Promise<number> => {
    let largest = 0
    await pool(sample, 16, async device => {
      const answer = await send(agent, base, { method: 'GET', path: '/v1/agents/assignments', credential: device.credential })
      if (answer.status !== 200) throw new Error(`assignments: ${answer.status} ${answer.body}`)
      const body = JSON.parse(answer.body) as { assignments: unknown[], peers: unknown[], reconnectSpreadSeconds: number }
      if (body.assignments.length !== 1) throw new Error(`expected one assignment, got ${body.assignments.length}`)
      largest = Math.max(largest, Buffer.byteLength(answer.body))
      spreadSeconds = body.reconnectSpreadSeconds
    })
    return largest
  }

  const pkg = await lab.newPackage(1)
  await enroll(SMALL_FLEET)
  const task = await lab.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/fleet', targets: { sites: [...SITES] } })
  t.is(task.resolvedDevices, SMALL_FLEET)
  const watched = devices.slice(0, 40)
  const small = await largestAnswer(watched)
  const smallSpread = spreadSeconds

  await enroll(FLEET - SMALL_FLEET)
  t.is(new Set(devices.map(device => device.id)).size, FLEET)
  await services.scheduler.tick()
  const large = await largestAnswer(watched)
  t.log(`largest answer: ${small} bytes at ${SMALL_FLEET} devices, ${large} bytes at ${FLEET}`)
  t.true(large <= MAX_ANSWER_BYTES, `${large} bytes`)
  // The same task and a full site sample (32 peers) either way: a few bytes of ids may differ, never a share of the fleet.
  t.true(large <= small * 1.05, `${large} bytes at ${FLEET} devices against ${small} at ${SMALL_FLEET}`)
  // Agents that lose the coordinator spread their return over the fleet at 1,000 reconnects per second.
  t.log(`reconnect spread: ${smallSpread} s at ${SMALL_FLEET} devices, ${spreadSeconds} s at ${FLEET}`)
  t.true(smallSpread >= SMALL_FLEET / 1000 && smallSpread < SMALL_FLEET / 1000 + 0.01, `${smallSpread} s`)
  t.true(spreadSeconds >= FLEET / 1000 && spreadSeconds < FLEET / 1000 + 0.01, `${spreadSeconds} s`)

  // Every simulated device holds a request with its current etag.
  await pool(devices, 64, async device => {
    const answer = await send(agent, base, { method: 'GET', path: '/v1/agents/assignments', credential: device.credential })
    const etag = (JSON.parse(answer.body) as { etag?: string }).etag
    if (answer.status !== 200 || etag === undefined) throw new Error(`assignments: ${answer.status}`)
    device.etag = etag
  })
  const heldBefore = services.assignments.heldRequests
  const answered = new Map<string, Answer>()
  // Devices come in waves, as agents do (their polls and reconnects are spread): each wave is held before the next connects.
  const waits: Array<Promise<void>> = []
  for (let from = 0; from < FLEET; from += HOLD_WAVE) {
    for (const device of devices.slice(from, from + HOLD_WAVE)) {
      waits.push((async () => {
        const answer = await send(holding, base, { method: 'GET', path: `/v1/agents/assignments?waitSeconds=60&etag=${encodeURIComponent(device.etag!)}`, credential: device.credential, signal: AbortSignal.timeout(90_000) })
        answered.set(device.id, answer)
      })())
    }
    const held = heldBefore + Math.min(FLEET, from + HOLD_WAVE)
    await waitFor(async () => services.assignments.heldRequests >= held ? true : undefined, `${held - heldBefore} held requests`, 60_000, 20)
  }
  const wokenBefore = Object.fromEntries(SITES.map(site => [site, services.assignments.wokenRequests(site)]))

  // A task for the east site: every east device's held request answers with it.
  const eastTask = await lab.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/east', targets: { sites: ['east'] } })
  const east = devices.filter(device => device.site === 'east')
  const west = devices.filter(device => device.site === 'west')
  await waitFor(async () => east.every(device => answered.has(device.id)) ? true : undefined, 'every east device to be answered', 60_000, 50)
  for (const device of east) {
    const answer = answered.get(device.id)!
    t.is(answer.status, 200)
    const body = JSON.parse(answer.body) as { assignments: Array<{ taskId: string }> }
    if (!body.assignments.some(assignment => assignment.taskId === eastTask.id)) t.fail(`${device.id} was answered without the east task`)
  }
  t.is(services.assignments.wokenRequests('east') - wokenBefore.east, east.length, 'each east request woken once')
  t.is(services.assignments.wokenRequests('west') - wokenBefore.west, 0, 'no west request woken')
  t.true(west.every(device => !answered.has(device.id)))

  // The west requests answer as soon as something concerns them: a task for every device.
  await lab.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/all', targets: { all: true } })
  await Promise.all(waits)
  t.true(west.every(device => answered.get(device.id)?.status === 200))
  t.is(services.assignments.wokenRequests('west') - wokenBefore.west, west.length)

  // A libp2p peer that is no enrolled device: the fleet's agent refuses it without any list of the 2,000.
  const stranger = await lab.startPeer({ enrolled: false })
  try {
    const from = lab.refusals.length
    const reached = await stranger.dial(lab.address, { timeoutMs: 5000 }).then(() => true, () => false)
    const refusal = await lab.refusal(refused => refused.subject === 'peer' && refused.reason === 'peer-not-allowed' && refused.peer === stranger.peerId, 'the uncertified peer refused', from)
    t.truthy(refusal.message)
    await waitFor(async () => !stranger.connectedTo(lab!.agent.identity.peerId) ? true : undefined, 'no connection to the agent', 10_000, 20)
    t.log(`the uncertified peer's dial ${reached ? 'opened and was hung up on' : 'failed'}`)
    t.is(stranger.requests.length, 0)
  } finally {
    await stranger.stop()
  }
})
