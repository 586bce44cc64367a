/**
 * A site of seven real agents on loopback, each bounded to three peer
 * connections: they find each other through the coordinator's peer list,
 * never hold more than their bound while a package spreads, and every
 * device succeeds through the partial view.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess } from '../helpers/processes.js'

const AGENTS = 7
const MAX_PEERS = 3

function metric (text: string, line: string): number {
  const found = text.split('\n').find(candidate => candidate.startsWith(line + ' '))
  return found === undefined ? 0 : Number(found.split(' ').pop())
}

test(`${AGENTS} agents bounded to ${MAX_PEERS} peers each: connections stay at or under the bound and every device succeeds`, async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-peer-set-'))
  const agents: AgentProcess[] = []
  let sampling = true
  let most = 0
  let samples = 0
  try {
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: AGENTS })
    agents.push(...await Promise.all(Array.from({ length: AGENTS }, async (_, index) => await startAgentProcess({
      coordinatorUrl: coordinator.url,
      enrollToken: token,
      hostname: `bounded-${index}`,
      site: 'branch',
      extraArgs: ['--max-peers', String(MAX_PEERS), '--metrics-listen', '127.0.0.1:0']
    }))))
    const urls = agents.map(agent => agent.event.metricsUrl as string)
    const sample = async (): Promise<number[]> => await Promise.all(urls.map(async url => metric(await (await fetch(url)).text(), 'meshdeploy_agent_peers_connected')))
    await waitFor(async () => (await sample()).every(count => count >= 1) ? true : undefined, 'every agent to connect to a peer', 60_000, 200)
    const watching = (async () => {
      while (sampling) {
        for (const count of await sample()) most = Math.max(most, count)
        samples++
        await new Promise(resolve => setTimeout(resolve, 100))
      }
    })()
    const file = join(work, 'data.bin')
    await writeFile(file, randomBytes(8 * 1024 * 1024))
    const pkg = await coordinator.api.uploadPackage(file, { name: 'data', version: '1' })
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv', targets: { sites: ['branch'] } })
    await waitFor(async () => {
      const rows = (await coordinator.api.get(`/v1/tasks/${task.id}/devices`)).devices
      return rows.length === AGENTS && rows.every((row: any) => row.state === 'succeeded') ? true : undefined
    }, 'every device to succeed', 120_000, 200)
    sampling = false
    await watching
    t.true(samples >= 1)
    t.true(most <= MAX_PEERS, `an agent held ${most} peers`)
    const progress = (await coordinator.api.get(`/v1/tasks/${task.id}`)).progress
    t.true(progress.bytesFromPeers > 0, 'devices took chunks from each other')
    t.log(`origin ${(progress.bytesFromOrigin / pkg.sizeBytes).toFixed(2)} copies, most peers held ${most} over ${samples} samples`)
  } finally {
    sampling = false
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
