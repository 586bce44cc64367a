import '../../protocol/polyfill.js'
import test from 'ava'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'
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
