import test from 'ava'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { payloadBytes } from '../../bench/lab/phase.js'
import { pingHq } from '../../bench/lab/reference.js'
import { Lab, delayLineAvailable, labAvailable } from '../../bench/lab/topology.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { sha256OfFile } from '../../protocol/index.js'
import { startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'

const available = await labAvailable()
if (!available.ok) process.stderr.write(`test/lab/mesh-netns: skipped, ${available.reason}\n`)
const labTest = available.ok ? test.serial : test.skip
// The WAN gets the benchmark's delay where the delay line can run (python3 and /dev/net/tun); without it, rate alone.
const delayLine = available.ok ? await delayLineAvailable() : { ok: false as const, reason: 'no lab' }
if (available.ok && !delayLine.ok) process.stderr.write(`test/lab/mesh-netns: the WAN has no delay, ${delayLine.reason}\n`)
const WAN_DELAY_MS = delayLine.ok ? 20 : 0

const SETTLED = new Set(['succeeded', 'already-installed', 'not-applicable', 'cancelled', 'expired'])
const PACKAGE_BYTES = 16 * 1024 * 1024

labTest(`two sites of three agents in network namespaces: mDNS alone finds the site peers, each WAN carries at most 1.1 copies, every device succeeds${available.ok ? '' : ` (skipped: ${available.reason})`}`, async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-lab-'))
  let lab: Lab | undefined
  let coordinator: CoordinatorProcess | undefined
  let api: ApiClient | undefined
  const agents: AgentProcess[] = []
  let finished = false
  try {
    lab = await Lab.create({ prefix: 'mdb', sites: 2, hostsPerSite: 3, wanMbit: 100, wanDelayMs: WAN_DELAY_MS })
    const hq = lab
    const link = await pingHq(hq, hq.sites[0].hosts[0], 10, 0.05)
    t.log(`WAN round trip ${link.averageMs} ms (min ${link.minMs} ms), ${link.received} of ${link.sent} answered`)
    t.true(link.minMs >= 2 * WAN_DELAY_MS, 'the delay applies in both directions')
    coordinator = await startCoordinatorProcess({ host: hq.hqAddress, chunkSizeKiB: 64, prefix: hq.prefixFor(hq.hq) })
    const port = Number(new URL(coordinator.url).port)
    const exposed = await hq.exposeToHost(hq.hq, hq.hqAddress, port)
    api = new ApiClient({ url: exposed.url, token: coordinator.adminToken })
    // Sites come from boundaries: no agent declares one.
    for (const site of hq.sites) {
      await api.post('/v1/sites', { name: `site-${site.index}` })
      await api.post('/v1/boundaries', { cidr: site.cidr, site: `site-${site.index}` })
    }
    const { token } = await api.post('/v1/enrollment-tokens', { maxUses: 6 })
    for (const site of hq.sites) {
      agents.push(...await Promise.all(site.hosts.map(async host => await startAgentProcess({
        coordinatorUrl: `http://${hq.hqAddress}:${port}`,
        enrollToken: token,
        hostname: `s${site.index}-h${host.index}`,
        prefix: hq.prefixFor(host.ns),
        mesh: 'as-given',
        // mDNS alone: the coordinator's peer list is not used.
        extraArgs: ['--listen', '/ip4/0.0.0.0/tcp/0', '--mdns', 'on', '--peer-list', 'off']
      }))))
    }
    const devices = await waitFor(async () => {
      const { devices } = await api!.get('/v1/devices')
      return devices.length === 6 && devices.every((device: any) => device.connectedPeers >= 2) ? devices : undefined
    }, 'every agent to find its two site peers over mDNS', 90_000, 500)
    for (const device of devices) {
      t.is(device.site, `site-${device.hostname[1]}`, `${device.hostname} placed by its boundary`)
      t.is(device.siteSource, 'boundary')
      t.is(device.connectedPeers, 2, `${device.hostname} sees exactly its site peers`)
      t.true(device.peerAddresses.every((address: string) => !address.includes('/127.0.0.1/')), 'no loopback address announced on the LAN')
    }

    const file = join(work, 'payload.bin')
    await writeFile(file, randomBytes(PACKAGE_BYTES))
    const pkg = await api.uploadPackage(file, { name: 'payload', version: '1' })
    const before = hq.sites.map(site => hq.wanCountersNow(site.index))
    const task = await api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/payload', targets: { all: true }, maxAttempts: 1 })
    const rows = await waitFor(async () => {
      const { devices } = await api!.get(`/v1/tasks/${task.id}/devices`)
      return devices.length === 6 && devices.every((row: any) => SETTLED.has(row.state) || (row.state === 'failed' && row.final === true)) ? devices : undefined
    }, 'the task to settle', 180_000, 500)
    const after = hq.sites.map(site => hq.wanCountersNow(site.index))
    t.deepEqual(rows.map((row: any) => row.state), Array(6).fill('succeeded'))
    for (const agent of agents) t.is(await sha256OfFile(join(agent.installRoot, 'srv/payload/payload.bin')), pkg.sha256)
    for (const site of hq.sites) {
      const received = after[site.index - 1].rxBytes - before[site.index - 1].rxBytes
      // Copies of the package: the payload of what crossed, each packet's headers taken off (as the benchmarks count).
      const payload = payloadBytes(received, after[site.index - 1].rxPackets - before[site.index - 1].rxPackets)
      const copies = payload / pkg.sizeBytes
      t.log(`site ${site.index}: the WAN carried ${received} bytes into the site (${payload} of payload), ${copies.toFixed(3)} copies of the package`)
      t.true(copies >= 0.99, `site ${site.index} got the package over its WAN`)
      t.true(copies <= 1.1, `site ${site.index}'s WAN carried ${copies.toFixed(3)} copies`)
      const siteRows = rows.filter((row: any) => row.site === `site-${site.index}`)
      t.true(siteRows.reduce((sum: number, row: any) => sum + row.bytesFromPeers, 0) >= 1.5 * pkg.sizeBytes, 'most bytes came from site peers')
    }
    for (const agent of agents) {
      const log = await readFile(agent.logFile, 'utf8')
      t.false(log.includes('"level":50'), `${agent.logFile} has no errors`)
    }
    finished = true
  } finally {
    api?.close()
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await coordinator?.stop()
    await lab?.destroy()
    await rm(work, { recursive: true, force: true })
    // After a pass the processes' data and logs go too; after a failure they stay to be looked at.
    if (finished && t.passed) {
      for (const folder of [...agents.map(agent => agent.dataDir), ...(coordinator !== undefined ? [coordinator.dataDir] : [])]) {
        await rm(folder, { recursive: true, force: true })
        await rm(`${folder}.log`, { force: true })
      }
    }
  }
  const left = await import('../../bench/lab/topology.js').then(async module => await module.namespacesWithPrefix(lab!.name))
  t.deepEqual(left, [], 'every namespace removed')
})
