import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { ApiClient } from '../../coordinator/cli/api-client.js'
import { adminClient, startMeshdeploy, type BenchProcess } from '../processes.js'
import { cpuTimes, peakRssBytes } from '../report.js'
import { Lab, type LabHost, type LabInit } from './topology.js'

/** The coordinator's port inside the headquarters namespace. */
export const COORDINATOR_PORT = 8650
/** How long an agent may take to enroll and start on a loaded machine. */
const AGENT_START_TIMEOUT_MS = 120_000

export interface LabFleetInit {
  lab: LabInit
  /** Folder for the coordinator's and agents' data and logs (the caller removes it). */
  root: string
  /** @default 1024 */
  chunkSizeKiB?: number
}

/** What one agent process used before it stopped. */
export interface AgentUsage {
  cpuSeconds: number
  /** Of which in the kernel. */
  systemCpuSeconds: number
  peakRssBytes: number
}

/** An agent of the lab: a host namespace, its data folder, and its process while it runs. */
export interface LabAgent {
  host: LabHost
  hostname: string
  site: string
  dataDir: string
  deviceId?: string
  process?: BenchProcess
  /** Every process this agent has had in the current phase. */
  usage: AgentUsage[]
}

/**
 * A lab with the coordinator in headquarters and one agent per host
 * namespace. Sites are placed by boundaries (each site's LAN), so no agent
 * declares its site; the agents find each other by mDNS and the
 * coordinator's peer list, as in a branch office.
 */
export class LabFleet {
  readonly lab: Lab
  readonly root: string
  readonly coordinator: BenchProcess
  /** The coordinator as agents reach it, across their WAN. */
  readonly coordinatorUrl: string
  /** The operator API as this process reaches it (through the lab's unix-socket bridge). */
  readonly api: ApiClient
  readonly agents: LabAgent[]
  private enrollToken?: string

  private constructor (lab: Lab, root: string, coordinator: BenchProcess, coordinatorUrl: string, api: ApiClient) {
    this.lab = lab
    this.root = root
    this.coordinator = coordinator
    this.coordinatorUrl = coordinatorUrl
    this.api = api
    this.agents = lab.sites.flatMap(site => site.hosts.map(host => ({
      host,
      hostname: `s${site.index}-pc${host.index}`,
      site: `site-${site.index}`,
      dataDir: join(root, `s${site.index}-pc${host.index}`),
      usage: []
    })))
  }

  static async open (init: LabFleetInit): Promise<LabFleet> {
    const lab = await Lab.create(init.lab)
    try {
      const coordinator = await startMeshdeploy([
        'coordinator', 'start', '--data', join(init.root, 'coordinator'), '--host', lab.hqAddress, '--port', String(COORDINATOR_PORT),
        '--chunk-size-kib', String(init.chunkSizeKiB ?? 1024), '--log-level', 'warn', '--operator-requests-per-second', '500'
      ], join(init.root, 'coordinator.log'), 'coordinator-started', lab.prefixFor(lab.hq))
      const exposed = await lab.exposeToHost(lab.hq, lab.hqAddress, COORDINATOR_PORT)
      const api = await adminClient(join(init.root, 'coordinator'), exposed.url)
      const fleet = new LabFleet(lab, init.root, coordinator, `http://${lab.hqAddress}:${COORDINATOR_PORT}`, api)
      for (const site of lab.sites) {
        await api.post('/v1/sites', { name: `site-${site.index}` })
        await api.post('/v1/boundaries', { cidr: site.cidr, site: `site-${site.index}` })
      }
      return fleet
    } catch (error) {
      await lab.destroy()
      throw error
    }
  }

  /** Starts an agent in its namespace (enrolling it the first time). `p2p` false: every byte from the origin. */
  async start (agent: LabAgent, options: { p2p: boolean, extraArgs?: string[] }): Promise<void> {
    if (agent.process !== undefined) throw new Error(`${agent.hostname} is already running`)
    this.enrollToken ??= (await this.api.post('/v1/enrollment-tokens', { maxUses: 10_000 })).token as string
    await mkdir(join(agent.dataDir, 'root'), { recursive: true })
    const started = await startMeshdeploy([
      'agent', 'start', '--data', agent.dataDir, '--coordinator', this.coordinatorUrl, '--insecure-http', '--enroll-token', this.enrollToken,
      '--hostname', agent.hostname, '--install-root', join(agent.dataDir, 'root'), '--log-level', 'warn',
      '--listen', `/ip4/${agent.host.address}/tcp/8651`, '--p2p', options.p2p ? 'on' : 'off', ...(options.extraArgs ?? [])
    ], `${agent.dataDir}.log`, 'agent-started', this.lab.prefixFor(agent.host.ns), AGENT_START_TIMEOUT_MS)
    agent.process = started
    agent.deviceId = started.event.deviceId as string
  }

  /** Notes what the agent's process used, then stops it (SIGTERM), or kills it (SIGKILL) as a crash would. */
  async stop (agent: LabAgent, how: 'stop' | 'kill' = 'stop'): Promise<void> {
    const running = agent.process
    if (running === undefined) return
    agent.usage.push(await usageOf(running.pid))
    agent.process = undefined
    await (how === 'kill' ? running.kill() : running.stop())
  }

  /** Forgets what a phase left on the device: its chunk cache, its task work and what it installed. */
  async wipe (agent: LabAgent): Promise<void> {
    if (agent.process !== undefined) throw new Error(`stop ${agent.hostname} before wiping it`)
    for (const entry of ['cache', 'cache-index.json', 'work', 'root']) await rm(join(agent.dataDir, entry), { recursive: true, force: true })
    agent.usage = []
  }

  /** Waits until each agent's device reports at least `peers` connected peers; returns the milliseconds it took. */
  async connected (agents: LabAgent[], peers: (agent: LabAgent) => number, timeoutMs = 180_000): Promise<number> {
    const started = Date.now()
    for (;;) {
      const { devices } = await this.api.get('/v1/devices')
      const byId = new Map<string, any>(devices.map((device: any) => [device.id, device]))
      if (agents.every(agent => (byId.get(agent.deviceId!)?.connectedPeers ?? 0) >= peers(agent))) return Date.now() - started
      if (Date.now() - started > timeoutMs) {
        const behind = agents.filter(agent => (byId.get(agent.deviceId!)?.connectedPeers ?? 0) < peers(agent)).map(agent => `${agent.hostname} (${byId.get(agent.deviceId!)?.connectedPeers ?? 0})`)
        throw new Error(`agents did not find their site peers: ${behind.join(', ')}`)
      }
      await new Promise(resolve => setTimeout(resolve, 250))
    }
  }

  async close (): Promise<void> {
    this.api.close()
    await Promise.all(this.agents.map(async agent => { await this.stop(agent).catch(() => {}) }))
    await this.coordinator.stop()
    await this.lab.destroy()
  }
}

/** CPU and peak memory of a running process; zeros when it is already gone. */
export async function usageOf (pid: number): Promise<AgentUsage> {
  try {
    const times = await cpuTimes(pid)
    return { cpuSeconds: times.userSeconds + times.systemSeconds, systemCpuSeconds: times.systemSeconds, peakRssBytes: await peakRssBytes(pid) }
  } catch {
    return { cpuSeconds: 0, systemCpuSeconds: 0, peakRssBytes: 0 }
  }
}
