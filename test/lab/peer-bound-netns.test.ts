/**
 * One site of sixteen agents, each in its own network namespace on one LAN,
 * finding each other by mDNS and by the coordinator's peer list, with a peer
 * set bounded at four connections: every agent's connection count, sampled
 * from its metrics throughout discovery and a distribution, stays at or
 * under the bound, and every device succeeds through the partial view.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Lab, labAvailable, namespacesWithPrefix } from '../../bench/lab/topology.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'

const available = await labAvailable()
if (!available.ok) process.stderr.write(`test/lab/peer-bound-netns: skipped, ${available.reason}\n`)
const labTest = available.ok ? test.serial : test.skip

const AGENTS = 16
const MAX_PEERS = 4
const METRICS_PORT = 9464
const PACKAGE_BYTES = 4 * 1024 * 1024
const SETTLED = new Set(['succeeded', 'already-installed', 'not-applicable', 'cancelled', 'expired'])

/** Polls every agent's metrics from the coordinator's namespace and prints each round's connection counts as a JSON line. */
const SAMPLER = `
const urls = process.argv.slice(1)
const read = async url => {
  try {
    const text = await (await fetch(url, { signal: AbortSignal.timeout(2000) })).text()
    const line = text.split('\\n').find(candidate => candidate.startsWith('meshdeploy_agent_peers_connected '))
    return line === undefined ? null : Number(line.split(' ').pop())
  } catch { return null }
}
for (;;) {
  console.log(JSON.stringify(await Promise.all(urls.map(read))))
  await new Promise(resolve => setTimeout(resolve, 250))
}
`

labTest(`one site of ${AGENTS} agents bounded to ${MAX_PEERS} peers: connection counts stay at or under the bound and every device succeeds${available.ok ? '' : ` (skipped: ${available.reason})`}`, async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-lab-bound-'))
  let lab: Lab | undefined
  let coordinator: CoordinatorProcess | undefined
  let api: ApiClient | undefined
  const agents: AgentProcess[] = []
  let finished = false
  try {
    lab = await Lab.create({ prefix: 'mdp', sites: 1, hostsPerSite: AGENTS, wanMbit: 100 })
    const hq = lab
    coordinator = await startCoordinatorProcess({ host: hq.hqAddress, chunkSizeKiB: 256, prefix: hq.prefixFor(hq.hq) })
    const port = Number(new URL(coordinator.url).port)
    api = new ApiClient({ url: (await hq.exposeToHost(hq.hq, hq.hqAddress, port)).url, token: coordinator.adminToken })
    const site = hq.sites[0]
    await api.post('/v1/sites', { name: 'branch' })
    await api.post('/v1/boundaries', { cidr: site.cidr, site: 'branch' })
    const { token } = await api.post('/v1/enrollment-tokens', { maxUses: AGENTS })
    agents.push(...await Promise.all(site.hosts.map(async host => await startAgentProcess({
      coordinatorUrl: `http://${hq.hqAddress}:${port}`,
      enrollToken: token,
      hostname: `b-h${host.index}`,
      prefix: hq.prefixFor(host.ns),
      mesh: 'as-given',
      // Both sources of peers: mDNS on the LAN (inside the namespaces) and the coordinator's list.
      extraArgs: ['--listen', '/ip4/0.0.0.0/tcp/0', '--mdns', 'on', '--max-peers', String(MAX_PEERS), '--metrics-listen', `${host.address}:${METRICS_PORT}`]
    }))))

    const sampler = hq.spawn(hq.hq, process.execPath, ['--input-type=module', '-e', SAMPLER, ...site.hosts.map(host => `http://${host.address}:${METRICS_PORT}/metrics`)])
    const most = new Array<number>(AGENTS).fill(0)
    let latest: Array<number | null> = []
    let rounds = 0
    createInterface({ input: sampler.stdout! }).on('line', line => {
      latest = JSON.parse(line) as Array<number | null>
      rounds++
      for (const [index, count] of latest.entries()) if (count !== null) most[index] = Math.max(most[index], count)
    })
    await waitFor(async () => latest.length === AGENTS && latest.every(count => count !== null && count >= 1) ? true : undefined, 'every agent to connect to a site peer', 90_000, 250)

    const file = join(work, 'payload.bin')
    await writeFile(file, randomBytes(PACKAGE_BYTES))
    const pkg = await api.uploadPackage(file, { name: 'payload', version: '1' })
    const task = await api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/payload', targets: { all: true }, maxAttempts: 1 })
    const rows = await waitFor(async () => {
      const { devices } = await api!.get(`/v1/tasks/${task.id}/devices`)
      return devices.length === AGENTS && devices.every((row: any) => SETTLED.has(row.state) || (row.state === 'failed' && row.final === true)) ? devices : undefined
    }, 'the task to settle', 180_000, 500)
    const roundsAtEnd = rounds
    // A few more rounds after the distribution: rotation and the peers' hand-overs go on.
    await waitFor(async () => rounds >= roundsAtEnd + 8 ? true : undefined, 'more samples', 30_000, 100)
    sampler.kill()

    t.deepEqual(rows.map((row: any) => row.state), Array(AGENTS).fill('succeeded'))
    t.true(rounds >= 20, `${rounds} rounds of samples`)
    for (const [index, count] of most.entries()) t.true(count <= MAX_PEERS, `b-h${index + 1} held ${count} peers, more than ${MAX_PEERS}`)
    t.true(most.filter(count => count >= 2).length >= AGENTS / 2, 'agents did connect to several peers')
    const progress = (await api.get(`/v1/tasks/${task.id}`)).progress
    t.true(progress.bytesFromPeers > 0, 'devices took chunks from each other')
    t.log(`most peers per agent: ${most.join(' ')} over ${rounds} rounds; origin ${(progress.bytesFromOrigin / pkg.sizeBytes).toFixed(2)} copies`)
    finished = true
  } finally {
    api?.close()
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await coordinator?.stop()
    await lab?.destroy()
    await rm(work, { recursive: true, force: true })
    if (finished && t.passed) {
      for (const folder of [...agents.map(agent => agent.dataDir), ...(coordinator !== undefined ? [coordinator.dataDir] : [])]) {
        await rm(folder, { recursive: true, force: true })
        await rm(`${folder}.log`, { force: true })
      }
    }
  }
  t.deepEqual(await namespacesWithPrefix(lab!.name), [], 'every namespace removed')
})
