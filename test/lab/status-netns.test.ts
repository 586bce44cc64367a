import test from 'ava'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Lab, labAvailable, namespacesWithPrefix } from '../../bench/lab/topology.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { sha256OfFile } from '../../protocol/index.js'
import { startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'
import { exactHistory, rowsWhen } from '../helpers/status.js'

const available = await labAvailable()
if (!available.ok) process.stderr.write(`test/lab/status-netns: skipped, ${available.reason}\n`)
const labTest = available.ok ? test.serial : test.skip

const KIB = 1024

labTest(`a site's WAN link cut while its agents finish from LAN peers: when it returns every record arrives, each exactly once${available.ok ? '' : ` (skipped: ${available.reason})`}`, async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-lab-status-'))
  let lab: Lab | undefined
  let coordinator: CoordinatorProcess | undefined
  let api: ApiClient | undefined
  const agents: AgentProcess[] = []
  let finished = false
  try {
    lab = await Lab.create({ prefix: 'mdg', sites: 1, hostsPerSite: 3 })
    const hq = lab
    const [site] = hq.sites
    coordinator = await startCoordinatorProcess({ host: hq.hqAddress, chunkSizeKiB: 64, prefix: hq.prefixFor(hq.hq) })
    const port = Number(new URL(coordinator.url).port)
    const exposed = await hq.exposeToHost(hq.hq, hq.hqAddress, port)
    api = new ApiClient({ url: exposed.url, token: coordinator.adminToken })
    const { token } = await api.post('/v1/enrollment-tokens', { maxUses: 3 })
    agents.push(...await Promise.all(site.hosts.map(async host => await startAgentProcess({
      coordinatorUrl: `http://${hq.hqAddress}:${port}`,
      enrollToken: token,
      hostname: `h${host.index}`,
      site: 'branch',
      prefix: hq.prefixFor(host.ns),
      mesh: 'as-given',
      extraArgs: ['--listen', '/ip4/0.0.0.0/tcp/0', '--mdns', 'on']
    }))))
    await waitFor(async () => {
      const { devices } = await api!.get('/v1/devices')
      return devices.length === 3 && devices.every((device: any) => device.connectedPeers >= 2) && devices.filter((device: any) => device.statusRelay === true).length === 1 ? true : undefined
    }, 'the site\'s agents to connect and elect a relay', 90_000, 500)
    const [seed, ...others] = agents
    const file = join(work, 'payload.bin')
    await writeFile(file, randomBytes(512 * KIB))
    const pkg = await api.uploadPackage(file, { name: 'payload', version: '1' })
    const seeding = await api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/seed', targets: { deviceIds: [seed.deviceId] }, maxAttempts: 1 })
    await rowsWhen({ api }, seeding.id, 1, 'the seed to hold the package', row => row.state === 'succeeded')

    // Capped, the other two fetch from the seed for several seconds; the WAN goes down while they do.
    const task = await api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/cut', targets: { deviceIds: others.map(agent => agent.deviceId) }, maxAttempts: 1, bandwidthKBps: 64 })
    await rowsWhen({ api }, task.id, 2, 'both devices to be downloading', row => row.state === 'downloading')
    await hq.setWan(site.index, false)
    for (const agent of others) {
      await waitFor(async () => await sha256OfFile(join(agent.installRoot, 'srv/cut/payload.bin')).then(hash => hash === pkg.sha256 ? true : undefined, () => undefined), `${agent.deviceId} to finish from its LAN peers`, 120_000, 250)
    }
    const { devices: during } = await api.get(`/v1/tasks/${task.id as string}/devices`)
    t.true(during.every((row: any) => row.state !== 'succeeded'), 'nothing of the end reached the coordinator while the link was down')
    t.true(during.every((row: any) => row.bytesFromOrigin === 0))

    await hq.setWan(site.index, true)
    const rows = await rowsWhen({ api }, task.id, 2, 'both devices\' records to arrive once the link is back', row => row.state === 'succeeded', 180_000)
    t.deepEqual(rows.map((row: any) => row.state), ['succeeded', 'succeeded'])
    for (const agent of others) {
      const records = await exactHistory({ api }, task.id, agent.deviceId)
      t.is(records.at(-1).state, 'succeeded')
      t.log(`${agent.deviceId}: ${records.length} records, each once`)
    }
    t.is(rows.reduce((sum: number, row: any) => sum + row.bytesFromOrigin, 0), 0, 'the site finished from chunks already on its LAN')
    finished = true
  } finally {
    api?.close()
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await coordinator?.stop()
    await lab?.destroy()
    if (finished && t.passed) {
      await rm(work, { recursive: true, force: true })
      for (const folder of [...agents.map(agent => agent.dataDir), ...(coordinator !== undefined ? [coordinator.dataDir] : [])]) {
        await rm(folder, { recursive: true, force: true })
        await rm(`${folder}.log`, { force: true })
      }
    }
  }
  t.deepEqual(await namespacesWithPrefix(lab!.name), [], 'every namespace removed')
})
