import { execFile } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { usageOf } from '../lab/fleet.js'
import { writeRandomFile } from '../random-file.js'
import { figure, type Figure, type ScenarioResult } from '../report.js'
import { BenchSite, type BenchAgent } from './mesh-site.js'
import { rawStream } from './mesh-throughput.js'

const run = promisify(execFile)

export interface AgentCostOptions {
  /** @default 64 */
  sizeMiB?: number
  /** Agents of the one site. @default 6 */
  agents?: number
  /** Seconds of idle measured once the site's agents are connected. @default 10 */
  idleSeconds?: number
}

interface PathCost {
  /** CPU-seconds each agent spent from the task's creation until every device settled. */
  cpuSeconds: number[]
  /** CPU-seconds each agent spent from its exec until it said it started. */
  startCpuSeconds: number[]
  peakRssBytes: number[]
  /** Creation of the task until the last device settled. */
  wallSeconds: number
  bytesFromPeers: number
  bytesFromOrigin: number
  /** CPU per agent per second while connected and idle (mesh only). */
  idleCpuSeconds?: number[]
}

const sum = (values: number[]): number => values.reduce((total, value) => total + value, 0)
const mean = (values: number[]): number => sum(values) / values.length
const max = (values: number[]): number => Math.max(...values)

async function cpuOf (agents: BenchAgent[]): Promise<number[]> {
  return await Promise.all(agents.map(async agent => (await usageOf(agent.pid)).cpuSeconds))
}

/** Starts `count` agents of one site, measures their start-up, idle and one distribution of `pkg`, and stops them. */
async function measurePath (site: BenchSite, prefix: string, count: number, packageId: string, args: string[], idleSeconds: number): Promise<PathCost> {
  const agents: BenchAgent[] = []
  const startCpuSeconds: number[] = []
  for (let index = 0; index < count; index++) {
    const agent = await site.agent(`${prefix}-${index}`, args)
    startCpuSeconds.push((await usageOf(agent.pid)).cpuSeconds)
    agents.push(agent)
  }
  const mesh = !args.includes('off')
  if (mesh) await site.connected(agents, count - 1)
  // Enrollment, first assignments and peer discovery settle before anything is measured.
  await new Promise(resolve => setTimeout(resolve, 3000))
  let idleCpuSeconds: number[] | undefined
  if (idleSeconds > 0) {
    const before = await cpuOf(agents)
    await new Promise(resolve => setTimeout(resolve, idleSeconds * 1000))
    const after = await cpuOf(agents)
    idleCpuSeconds = after.map((value, index) => (value - before[index]) / idleSeconds)
  }
  const before = await cpuOf(agents)
  const started = performance.now()
  const { rows } = await site.distribute(packageId, agents)
  const wallSeconds = (performance.now() - started) / 1000
  const after = await cpuOf(agents)
  const usages = await Promise.all(agents.map(async agent => await usageOf(agent.pid)))
  const cost: PathCost = {
    cpuSeconds: after.map((value, index) => value - before[index]),
    startCpuSeconds,
    peakRssBytes: usages.map(usage => usage.peakRssBytes),
    wallSeconds,
    bytesFromPeers: sum(rows.map((row: any) => row.bytesFromPeers ?? 0)),
    bytesFromOrigin: sum(rows.map((row: any) => row.bytesFromOrigin ?? 0)),
    ...(idleCpuSeconds !== undefined ? { idleCpuSeconds } : {})
  }
  await Promise.all(agents.map(async agent => { await agent.stop() }))
  return cost
}

/** CPU-seconds of `sha256sum` over the file (GNU time: user + system). */
async function sha256sumCpuSeconds (file: string): Promise<number> {
  const { stderr } = await run('/usr/bin/time', ['-f', 'MEASURED %U %S', 'sha256sum', file])
  const line = stderr.split('\n').reverse().find(candidate => candidate.startsWith('MEASURED '))
  if (line === undefined) throw new Error(`no measurement from /usr/bin/time: ${stderr.slice(-300)}`)
  const [, user, system] = line.split(' ').map(Number)
  return user + system
}

/**
 * What an agent costs in CPU to bring a package in, on loopback: a site of
 * agents already running fetches it with the mesh, then another with
 * `--p2p off` (every byte from the origin over HTTP), beside what the same
 * bytes cost through `sha256sum` and through a raw libp2p noise+yamux stream
 * in the same run. Also start-up CPU, idle CPU with the site's peers
 * connected, and peak memory.
 */
export async function agentCost (options: AgentCostOptions = {}): Promise<ScenarioResult> {
  const sizeMiB = options.sizeMiB ?? 64
  const count = options.agents ?? 6
  const idleSeconds = options.idleSeconds ?? 10
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const site = await BenchSite.open('agent-cost')
  try {
    const pkg = await site.package(sizeMiB)
    const per64MiB = 64 / sizeMiB
    const file = join(site.root, 'hashed.bin')
    await writeRandomFile(file, pkg.sizeBytes)
    const sha256sum = await sha256sumCpuSeconds(file)
    await rm(file)
    const raw = await rawStream(pkg.sizeBytes)
    const mesh = await measurePath(site, 'mesh', count, pkg.id, [], idleSeconds)
    const origin = await measurePath(site, 'origin', count, pkg.id, ['--p2p', 'off'], 0)
    const rawPerSide = (raw.senderCpuSeconds + raw.receiverCpuSeconds) / 2
    const meshCpu = mean(mesh.cpuSeconds) * per64MiB
    const originCpu = mean(origin.cpuSeconds) * per64MiB
    const figures: Figure[] = [
      figure('mesh: agent CPU per 64 MiB (mean of the site)', meshCpu, 'CPU-s', { atMost: 1.5 }, `most ${(max(mesh.cpuSeconds) * per64MiB).toFixed(2)} s; site done in ${mesh.wallSeconds.toFixed(1)} s`),
      figure('origin only (--p2p off): agent CPU per 64 MiB', originCpu, 'CPU-s', { atMost: 1.0 }, `most ${(max(origin.cpuSeconds) * per64MiB).toFixed(2)} s; site done in ${origin.wallSeconds.toFixed(1)} s`),
      figure('sha256sum of the same bytes', sha256sum * per64MiB, 'CPU-s'),
      figure('raw libp2p noise+yamux stream, per side', rawPerSide * per64MiB, 'CPU-s', undefined, `sender ${raw.senderCpuSeconds.toFixed(2)} s, receiver ${raw.receiverCpuSeconds.toFixed(2)} s, ${(raw.ms / 1000).toFixed(2)} s`),
      figure('mesh agent ÷ raw stream per side', meshCpu / (rawPerSide * per64MiB), '×'),
      figure('origin-only agent ÷ sha256sum', originCpu / (sha256sum * per64MiB), '×'),
      figure('mesh ÷ origin only, agent CPU', meshCpu / originCpu, '×'),
      figure('mesh ÷ origin only, site wall time', mesh.wallSeconds / origin.wallSeconds, '×', undefined, 'loopback: the bound is CPU, not a link'),
      figure('agent start-up CPU, mesh on (mean)', mean(mesh.startCpuSeconds), 'CPU-s', { atMost: 0.8 }, 'exec until the agent-started event'),
      figure('agent start-up CPU, --p2p off (mean)', mean(origin.startCpuSeconds), 'CPU-s', { atMost: 0.8 }),
      figure(`idle agent with ${count - 1} peers (mean)`, mean(mesh.idleCpuSeconds ?? [0]) * 100, '% of a core', { atMost: 0.5 }, `most ${(max(mesh.idleCpuSeconds ?? [0]) * 100).toFixed(2)} % over ${idleSeconds} s`),
      figure('agent peak RSS, mesh (most)', max(mesh.peakRssBytes) / 2 ** 20, 'MiB', undefined, `${sizeMiB} MiB package`),
      figure('agent peak RSS, origin only (most)', max(origin.peakRssBytes) / 2 ** 20, 'MiB'),
      figure('mesh: origin copies for the site', mesh.bytesFromOrigin / pkg.sizeBytes, 'copies')
    ]
    return {
      scenario: 'agent-cost',
      startedAt,
      durationMs: Date.now() - started,
      parameters: { sizeMiB, agents: count, idleSeconds, chunkSizeBytes: pkg.chunkSizeBytes },
      figures,
      raw: { mesh, origin, sha256sumCpuSeconds: sha256sum, raw }
    }
  } finally {
    await site.close()
  }
}
