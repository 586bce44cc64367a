import '../../protocol/polyfill.js'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { adminClient, startMeshdeploy, type BenchProcess } from '../processes.js'
import { figure, type Figure, type ScenarioResult } from '../report.js'

export interface StatusWanOptions {
  /** Devices in the site. @default 20 */
  agents?: number
  /** How long the requests are counted from the task's creation, seconds. @default 60 */
  windowSeconds?: number
}

interface Counts {
  /** Status requests that reached the coordinator: a device's own (direct) and relays' batches. */
  direct: number
  relay: number
  stored: number
  duplicate: number
}

async function statusCounts (url: string, token: string): Promise<Counts> {
  const text = await (await fetch(new URL('/metrics', url), { headers: { authorization: `Bearer ${token}` } })).text()
  const value = (line: string): number => Number(text.split('\n').find(candidate => candidate.startsWith(line))?.split(' ').at(-1) ?? 0)
  return {
    direct: value('meshdeploy_status_batches_total{path="direct"}'),
    relay: value('meshdeploy_status_batches_total{path="relay"}'),
    stored: value('meshdeploy_status_records_total{outcome="stored"}'),
    duplicate: value('meshdeploy_status_records_total{outcome="duplicate"}')
  }
}

interface ModeResult {
  requests: number
  requestsPerMinute: number
  records: number
  duplicates: number
  settledDevices: number
  windowMs: number
}

/**
 * One site of `count` agents (each its own process, as on its own device,
 * its libp2p node on loopback, mDNS off) against a coordinator process; a task sends them a
 * package at a capped rate so that they report progress for most of the
 * window, and the coordinator's own counters say how many status requests
 * reached it and how many records they carried.
 */
async function measureMode (count: number, windowMs: number, gossip: boolean): Promise<ModeResult> {
  const root = await mkdtemp(join(tmpdir(), `meshdeploy-bench-status-wan-${gossip ? 'relay' : 'direct'}-`))
  let coordinator: BenchProcess | undefined
  const agents: BenchProcess[] = []
  try {
    coordinator = await startMeshdeploy(['coordinator', 'start', '--data', join(root, 'coordinator'), '--port', '0', '--log-level', 'warn', '--chunk-size-kib', '64'], join(root, 'coordinator.log'), 'coordinator-started')
    const url = coordinator.event.url as string
    const api = await adminClient(join(root, 'coordinator'), url)
    const adminToken = (await readFile(join(root, 'coordinator', 'admin-token'), 'utf8')).trim()
    const { token } = await api.post('/v1/enrollment-tokens', { maxUses: count })
    for (let index = 1; index <= count; index++) {
      const dataDir = join(root, `pc-${index}`)
      await mkdir(join(dataDir, 'root'), { recursive: true })
      agents.push(await startMeshdeploy([
        'agent', 'start', '--data', dataDir, '--coordinator', url, '--insecure-http', '--enroll-token', token as string,
        '--hostname', `pc-${index}`, '--site', 'wan', '--install-root', join(dataDir, 'root'), '--log-level', 'warn',
        '--listen', '/ip4/127.0.0.1/tcp/0', '--mdns', 'off', '--status-gossip', gossip ? 'on' : 'off'
      ], join(root, `pc-${index}.log`), 'agent-started'))
    }
    const deadline = Date.now() + 120_000
    for (;;) {
      const { devices } = await api.get('/v1/devices')
      const connected = devices.length === count && devices.every((device: any) => (device.connectedPeers ?? 0) >= count - 1)
      const relays = devices.filter((device: any) => device.statusRelay === true).length
      if (connected && (!gossip || relays === 1)) break
      if (Date.now() > deadline) throw new Error('the site\'s agents did not connect (and elect a relay)')
      await new Promise(resolve => setTimeout(resolve, 500))
    }
    const file = join(root, 'payload.bin')
    await writeFile(file, randomBytes(2 * 1024 * 1024))
    const pkg = await api.uploadPackage(file, { name: 'status-wan', version: '1' })
    const before = await statusCounts(url, adminToken)
    const started = Date.now()
    // 2 MiB at 48 KB/s: every device is downloading, and reporting progress each second, for most of the window.
    const task = await api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/wan', targets: { sites: ['wan'] }, maxAttempts: 1, bandwidthKBps: 48 })
    await new Promise(resolve => setTimeout(resolve, Math.max(0, started + windowMs - Date.now())))
    const after = await statusCounts(url, adminToken)
    const windowActualMs = Date.now() - started
    const { devices: rows } = await api.get(`/v1/tasks/${task.id as string}/devices`)
    api.close()
    const requests = (after.direct - before.direct) + (after.relay - before.relay)
    return {
      requests,
      requestsPerMinute: requests / (windowActualMs / 60_000),
      records: after.stored - before.stored,
      duplicates: after.duplicate - before.duplicate,
      settledDevices: rows.filter((row: any) => row.state === 'succeeded').length,
      windowMs: windowActualMs
    }
  } finally {
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await coordinator?.stop()
    await rm(root, { recursive: true, force: true })
  }
}

/**
 * WAN status requests of one site per minute: every device reporting
 * directly (the baseline, measured in the same run) against the site's
 * elected relay batching everyone's records.
 */
export async function statusWan (options: StatusWanOptions = {}): Promise<ScenarioResult> {
  const count = options.agents ?? 20
  const windowMs = (options.windowSeconds ?? 60) * 1000
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const direct = await measureMode(count, windowMs, false)
  const relay = await measureMode(count, windowMs, true)
  const figures: Figure[] = [
    figure(`status requests per site per minute, ${count} devices, each reporting directly`, direct.requestsPerMinute, 'requests/min', undefined, `baseline; ${direct.records} records stored`),
    figure(`status requests per site per minute, ${count} devices, through the site relay`, relay.requestsPerMinute, 'requests/min', undefined, `${relay.records} records stored`),
    figure('relay ÷ direct, requests', relay.requestsPerMinute / direct.requestsPerMinute, '×'),
    figure('records per request, direct', direct.records / Math.max(1, direct.requests), 'records'),
    figure('records per request, relay', relay.records / Math.max(1, relay.requests), 'records')
  ]
  return {
    scenario: 'status-wan',
    startedAt,
    durationMs: Date.now() - started,
    parameters: { agents: count, windowSeconds: windowMs / 1000, packageMiB: 2, bandwidthKBps: 48 },
    figures,
    raw: { direct, relay }
  }
}
