import test from 'ava'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseMetricsListen } from '../../agent/metrics.js'
import { startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess } from '../helpers/processes.js'

function value (text: string, line: string): number {
  const found = text.split('\n').find(candidate => candidate.startsWith(line + ' '))
  return found === undefined ? 0 : Number(found.split(' ').pop())
}

test('the metrics address parses as HOST:PORT, a bare port meaning loopback', t => {
  t.deepEqual(parseMetricsListen('9464'), { host: '127.0.0.1', port: 9464 })
  t.deepEqual(parseMetricsListen('0.0.0.0:9464'), { host: '0.0.0.0', port: 9464 })
  t.deepEqual(parseMetricsListen('[::1]:9464'), { host: '::1', port: 9464 })
  t.throws(() => parseMetricsListen('host:99999'))
  t.throws(() => parseMetricsListen('nope'))
})

test('agents that are asked to serve metrics count bytes by source, time requests, and show peers, cache and tasks', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-agent-metrics-'))
  const agents: AgentProcess[] = []
  try {
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: 2 })
    for (const name of ['metrics-a', 'metrics-b']) {
      agents.push(await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: name, site: 'lab', extraArgs: ['--metrics-listen', '127.0.0.1:0'] }))
    }
    const file = join(work, 'data.bin')
    await writeFile(file, randomBytes(4 * 1024 * 1024))
    const pkg = await coordinator.api.uploadPackage(file, { name: 'data', version: '1' })
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv', targets: { sites: ['lab'] } })
    await waitFor(async () => {
      const rows = (await coordinator.api.get(`/v1/tasks/${task.id}/devices`)).devices
      return rows.length === 2 && rows.every((row: any) => row.state === 'succeeded') ? true : undefined
    }, 'both devices to succeed', 90_000, 200)
    let servedToPeers = 0
    for (const agent of agents) {
      const url = agent.event.metricsUrl as string
      t.regex(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
      const text = await (await fetch(url)).text()
      const fromPeers = value(text, 'meshdeploy_agent_bytes_received_total{source="peer"}')
      const fromOrigin = value(text, 'meshdeploy_agent_bytes_received_total{source="origin"}')
      t.true(fromPeers + fromOrigin >= pkg.sizeBytes, `${agent.event.deviceId}: ${fromPeers} from peers + ${fromOrigin} from the origin`)
      t.true(value(text, 'meshdeploy_agent_chunk_request_seconds_count{source="origin",outcome="ok"}') + value(text, 'meshdeploy_agent_chunk_request_seconds_count{source="peer",outcome="ok"}') >= pkg.chunkCount)
      t.is(value(text, 'meshdeploy_agent_peers_connected'), 1)
      t.true(value(text, 'meshdeploy_agent_cache_bytes{kind="used"}') >= pkg.sizeBytes)
      t.is(value(text, 'meshdeploy_agent_tasks{state="succeeded"}'), 1)
      servedToPeers += value(text, 'meshdeploy_agent_bytes_served_total')
      const other = await fetch(url.replace('/metrics', '/'))
      t.is(other.status, 404)
    }
    const fromPeersTotal = (await coordinator.api.get(`/v1/tasks/${task.id}`)).progress.bytesFromPeers
    t.is(servedToPeers, fromPeersTotal, 'what one agent served, the other received from a peer')
  } finally {
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
