import '../../protocol/polyfill.js'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { Agent } from '../../agent/agent.js'
import type { ExchangeLimits, MeshSettings } from '../../agent/p2p/mesh.js'
import { generateSwarmKey } from '../../agent/p2p/private-network.js'
import type { Refusal } from '../../agent/refusals.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { startCoordinator, type RunningCoordinator } from '../../coordinator/main.js'
import type { HttpLimitsInit } from '../../coordinator/http/request-limits.js'
import { generateKeyPair, sha256OfFile, toHex, type SignedEnvelope, type StatusRecord } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'
import { MaliciousPeer, type MaliciousPeerInit } from '../helpers/malicious-peer.js'
import { waitFor } from '../helpers/processes.js'
import { filesUnder } from './harness.js'

export const CHUNK_BYTES = 64 * 1024
const SETTLED = new Set(['succeeded', 'failed', 'cancelled', 'expired', 'already-installed', 'not-applicable'])

/** Small enough to reach in a test, large enough that an honest download never meets them. */
export const LAB_EXCHANGE: ExchangeLimits = {
  requestsPerSecond: 40,
  requestBurst: 40,
  refusalsBeforeDisconnect: 10,
  abuseSuspensionMs: 10 * 60_000,
  pieceIdleTimeoutMs: 1000
}

export interface LabPackage {
  id: string
  sha256: string
  sizeBytes: number
  fileName: string
  chunks: Buffer[]
}

/**
 * A real coordinator and a real agent with its libp2p node on loopback, in a
 * private network; malicious peers are started against it. The agent's
 * refusals are recorded as events.
 */
export interface MeshLab {
  root: string
  coordinator: RunningCoordinator
  api: ApiClient
  agent: Agent
  swarmKey: Buffer
  /** The agent's address, with its peer id. */
  address: Multiaddr
  refusals: Refusal[]
  /** Starts a malicious peer (enrolled unless told otherwise) and waits until the agent's gate knows of it. */
  startPeer: (init?: Partial<Omit<MaliciousPeerInit, 'coordinatorKeyId' | 'allowedPeerIds' | 'enrolled'>> & { enrolled?: boolean }) => Promise<MaliciousPeer>
  /** Connects a peer to the agent and waits until both count the other as connected. */
  connect: (peer: MaliciousPeer, options?: { persistent?: boolean }) => Promise<void>
  /** Uploads a package of random chunks. */
  newPackage: (chunkCount: number) => Promise<LabPackage>
  /** Deploys a package to the agent; resolves with the settled row. */
  deploy: (pkg: LabPackage, extra?: Record<string, unknown>) => Promise<{ taskId: string, row: any, history: StatusRecord[] }>
  /** Waits for a refusal that matches, among those recorded since `from`. */
  refusal: (match: (refusal: Refusal) => boolean, what: string, from?: number, timeoutMs?: number) => Promise<Refusal>
  /** The agent's cached chunks; throws if any does not hash to its name. */
  verifiedCache: () => Promise<string[]>
  close: () => Promise<void>
}

export async function openMeshLab (init: { exchange?: ExchangeLimits, node?: MeshSettings['node'], limits?: HttpLimitsInit } = {}): Promise<MeshLab> {
  const root = await mkdtemp(join(tmpdir(), 'md-mesh-security-'))
  const coordinator = await startCoordinator({ dataDir: join(root, 'coordinator'), port: 0, logger: silentLogger(), chunkSizeBytes: CHUNK_BYTES, ...(init.limits !== undefined ? { limits: init.limits } : {}) })
  const api = new ApiClient({ url: coordinator.url, token: coordinator.services.bootstrapAdminToken! })
  const { token } = await api.post('/v1/enrollment-tokens', { maxUses: 1000 })
  const swarmKey = Buffer.from(generateSwarmKey())
  const dataDir = join(root, 'agent')
  const installRoot = join(root, 'install')
  await mkdir(installRoot, { recursive: true })
  const agent = await Agent.start({
    dataDir,
    coordinatorUrl: coordinator.url,
    allowInsecureHttp: true,
    enrollToken: token,
    hostname: 'honest',
    site: 'branch',
    installRoot,
    logger: silentLogger(),
    waitSeconds: 5,
    progressIntervalMs: 100,
    mesh: {
      listen: ['/ip4/127.0.0.1/tcp/0'],
      mdns: false,
      swarmKey,
      exchange: { ...LAB_EXCHANGE, ...init.exchange },
      ...(init.node !== undefined ? { node: init.node } : {}),
      swarm: { picker: { gatherMs: 0, electionTimeoutMs: 1000 } }
    }
  })
  const refusals: Refusal[] = []
  agent.refusals.on('refused', refusal => { refusals.push(refusal) })
  const address = multiaddr(`${agent.mesh!.addresses()[0]}/p2p/${agent.identity.peerId}`)
  let files = 0
  const lab: MeshLab = {
    root,
    coordinator,
    api,
    agent,
    swarmKey,
    address,
    refusals,
    startPeer: async ({ enrolled: isEnrolled, ...options } = {}) => {
      const key = options.key ?? generateKeyPair()
      let enrolled: { certificate: SignedEnvelope, coordinatorPublicKey: string } | undefined
      if (isEnrolled !== false) {
        const response = await fetch(`${coordinator.url}/v1/agents/enroll`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ token, publicKey: toHex(key.publicKey), hostname: `peer-${toHex(key.publicKey).slice(0, 8)}`, platform: 'linux', arch: 'x64', site: 'branch' })
        })
        if (response.status !== 201) throw new Error(`enrolling the peer: ${response.status} ${await response.text()}`)
        enrolled = await response.json() as { certificate: SignedEnvelope, coordinatorPublicKey: string }
      }
      const peer = await MaliciousPeer.start({
        swarmKey,
        ...options,
        key,
        coordinatorKeyId: agent.identity.coordinatorKeyId,
        allowedPeerIds: [agent.identity.peerId],
        ...(enrolled !== undefined ? { enrolled } : {})
      })
      return peer
    },
    connect: async (peer, options = {}) => {
      await peer.dial(address, options)
      await waitFor(async () => peer.announcementChannels.has(agent.identity.peerId) && peer.announcingTo(agent.identity.peerId) ? true : undefined, 'the announcement channels to open both ways', 30_000, 20)
    },
    newPackage: async chunkCount => {
      const chunks = Array.from({ length: chunkCount }, () => randomBytes(CHUNK_BYTES))
      const file = join(root, `payload-${++files}.bin`)
      await writeFile(file, Buffer.concat(chunks))
      const record = await api.uploadPackage(file, { name: `payload-${files}`, version: '1' })
      await rm(file)
      return { id: record.id, sha256: record.sha256, sizeBytes: record.sizeBytes, fileName: record.fileName, chunks }
    },
    deploy: async (pkg, extra = {}) => {
      const destination = `/srv/${pkg.id.slice(0, 12)}`
      const task = await api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination, targets: { deviceIds: [agent.identity.deviceId] }, maxAttempts: 1, ...extra })
      const row = await waitFor(async () => {
        const current = await coordinator.services.tasks.row(task.id, agent.identity.deviceId)
        return current !== undefined && SETTLED.has(current.state) ? current : undefined
      }, `task ${task.id as string} to settle`, 120_000, 50)
      await agent.outbox.flush()
      const history = await coordinator.services.statuses.history(task.id, agent.identity.deviceId)
      if (row.state === 'succeeded') {
        const actual = await sha256OfFile(join(installRoot, destination, pkg.fileName))
        if (actual !== pkg.sha256) throw new Error(`the installed file hashes to ${actual}, not ${pkg.sha256}`)
      }
      return { taskId: task.id, row, history }
    },
    refusal: async (match, what, from = 0, timeoutMs = 30_000) => await waitFor(async () => refusals.slice(from).find(match), what, timeoutMs, 20),
    verifiedCache: async () => {
      const cached = (await filesUnder(join(dataDir, 'cache'))).filter(path => !path.startsWith('tmp'))
      for (const path of cached) {
        const name = path.split('/').pop()!
        const actual = createHash('sha256').update(await readFile(join(dataDir, 'cache', path))).digest('hex')
        if (actual !== name) throw new Error(`the cached chunk ${path} hashes to ${actual}`)
      }
      return cached.map(path => path.split('/').pop()!).sort()
    },
    close: async () => {
      await agent.stop()
      api.close()
      await coordinator.close()
      await rm(root, { recursive: true, force: true })
    }
  }
  return lab
}
