import '../../protocol/polyfill.js'
import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { sha256OfFile } from '../../protocol/index.js'
import { freePort, startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'
import { cachedChunkBytes, exactHistory, meshFormed, rowsWhen, startSite, stopAll, uploadRandom } from '../helpers/status.js'

const run = promisify(execFile)
const KIB = 1024
const MIB = 1024 * KIB

/** Has one agent fetch a package first, so that it holds every chunk for its site peers. */
async function seed (coordinator: CoordinatorProcess, agent: AgentProcess, pkg: any): Promise<void> {
  const seeding = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/seed', targets: { deviceIds: [agent.deviceId] }, maxAttempts: 1 })
  const [row] = await rowsWhen(coordinator, seeding.id, 1, 'the seed to get the package')
  if (row.state !== 'succeeded') throw new Error(`the seed did not get the package: ${row.state as string} ${row.message as string}`)
}

/** What must survive a restart of the coordinator, without what changes by itself (contact times, online state). */
async function durableState (coordinator: CoordinatorProcess): Promise<unknown> {
  const { packages } = await coordinator.api.get('/v1/packages')
  const { tasks } = await coordinator.api.get('/v1/tasks')
  const { devices } = await coordinator.api.get('/v1/devices')
  const { tokens } = await coordinator.api.get('/v1/tokens')
  const rows = await Promise.all(tasks.map(async (task: any) => (await coordinator.api.get(`/v1/tasks/${task.id as string}/devices`)).devices.map((row: any) => [row.deviceId, row.state, row.seq, row.bytesFromPeers, row.bytesFromOrigin])))
  return {
    packages: packages.map((pkg: any) => [pkg.id, pkg.name, pkg.sha256, pkg.sizeBytes]),
    tasks: tasks.map((task: any) => [task.id, task.status, task.revision, task.progress]),
    rows,
    devices: devices.map((device: any) => [device.id, device.hostname, device.site, device.status, device.peerId]),
    tokens: tokens.map((token: any) => [token.id, token.name, token.role, token.revokedAt ?? null])
  }
}

test.serial('the coordinator and a downloading agent both killed mid-task: the agent, restarted, finishes from its LAN peer without the coordinator and fetches only what it lacked; back, the coordinator gets every record once; packages, tasks, devices, tokens and progress survive its restarts', async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-faults-'))
  const port = await freePort()
  const first = await startCoordinatorProcess({ chunkSizeKiB: 64, port })
  const coordinators: CoordinatorProcess[] = [first]
  let agents: AgentProcess[] = []
  const restarted: AgentProcess[] = []
  try {
    await first.api.post('/v1/tokens', { name: 'night-shift', role: 'viewer' })
    agents = await startSite(first, 2, 'kill')
    await meshFormed(first, agents)
    const [holder, downloader] = agents
    const pkg = await uploadRandom(first, work, 'payload.bin', 1 * MIB)
    await seed(first, holder, pkg)
    // The downloader fetches from the holder at a capped rate: chunks land a few at a time, seconds apart.
    const task = await first.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/kill', targets: { sites: ['branch'] }, maxAttempts: 1, bandwidthKBps: 128 })
    await waitFor(async () => { const held = await cachedChunkBytes(downloader.dataDir); return held > 0 && held < pkg.sizeBytes ? true : undefined }, 'the first chunks to land', 60_000, 50)
    await downloader.kill()
    const heldBytes = await cachedChunkBytes(downloader.dataDir)
    await first.kill()
    // Restarted while the coordinator is down, the agent takes its download up again from what it had stored.
    restarted.push(await startAgentProcess({ coordinatorUrl: first.url, hostname: 'kill-2', dataDir: downloader.dataDir }))
    await waitFor(async () => await sha256OfFile(join(downloader.installRoot, 'srv/kill/payload.bin')).then(hash => hash === pkg.sha256 ? true : undefined, () => undefined), 'the device to finish while the coordinator is down', 90_000, 250)
    const second = await startCoordinatorProcess({ dataDir: first.dataDir, port, chunkSizeKiB: 64 })
    coordinators.push(second)
    const rows = await rowsWhen(second, task.id, 2, 'both devices to succeed', row => row.state === 'succeeded')
    t.deepEqual(rows.map((row: any) => row.state), ['succeeded', 'succeeded'])
    for (const agent of agents) await exactHistory(second, task.id, agent.deviceId)
    const view = await second.api.get(`/v1/tasks/${task.id as string}`)
    t.is(view.progress.succeeded, 2)
    t.is(view.progress.total, 2)

    const row = rows.find((candidate: any) => candidate.deviceId === downloader.deviceId)
    const records = await exactHistory(second, task.id, downloader.deviceId)
    // The restarted run begins with a downloading record of nothing done, carrying what the first run had fetched.
    const resumed = records.filter((record: any) => record.state === 'downloading' && record.bytesDone === 0).at(-1)
    const fetchedAfterRestart = row.bytesFromPeers + row.bytesFromOrigin - resumed.bytesFromPeers - resumed.bytesFromOrigin
    t.log(`held at the restart ${heldBytes} bytes, fetched after it ${fetchedAfterRestart} (peers ${row.bytesFromPeers - resumed.bytesFromPeers}, origin ${row.bytesFromOrigin - resumed.bytesFromOrigin}), package ${pkg.sizeBytes as number}`)
    t.true(heldBytes > 0 && heldBytes < pkg.sizeBytes, 'the kill came mid-download')
    t.is(heldBytes + fetchedAfterRestart, pkg.sizeBytes, 'no chunk held at the restart was fetched again')
    t.deepEqual([...new Set(records.map((record: any) => record.attempt))], [1], 'the interrupted attempt went on under its own number')
    t.is((await second.api.get('/v1/stats')).origin.bytesServed, 0, 'the restarted coordinator served nothing: the device had it from its peer')
    t.is(row.bytesFromOrigin, 0)

    const before = await durableState(second)
    await second.stop()
    const third = await startCoordinatorProcess({ dataDir: first.dataDir, port, chunkSizeKiB: 64 })
    coordinators.push(third)
    t.deepEqual(await durableState(third), before)
    t.true((before as any).tokens.some((token: any) => token[1] === 'night-shift'))
  } finally {
    await stopAll([...agents, ...restarted], coordinators, work, t.passed)
  }
})

const root = process.getuid?.() === 0
const rootTest = root ? test.serial : test.skip

rootTest(`an agent whose disk is full reports a clear failure, keeps its state, and succeeds once space is freed${root ? '' : ' (skipped: mounting a tmpfs needs root)'}`, async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-faults-'))
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const mount = await mkdtemp(join(tmpdir(), 'mdg-tmpfs-'))
  const agents: AgentProcess[] = []
  let mounted = false
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'mdg-disk-full', mount])
    mounted = true
    const dataDir = join(mount, 'agent')
    await mkdir(dataDir)
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: 1 })
    agents.push(await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: 'full', site: 'branch', dataDir, extraArgs: ['--retry-soon-seconds', '2'] }))
    const [agent] = agents
    // Leave about 12 MiB: the 8 MiB package, its assembled file and the reserve do not fit.
    const { stdout } = await run('df', ['-B1', '--output=avail', mount])
    const available = Number(stdout.trim().split('\n')[1])
    await writeFile(join(mount, 'ballast'), Buffer.alloc(available - 12 * MIB))
    const pkg = await uploadRandom(coordinator, work, 'payload.bin', 8 * MIB)
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/full', targets: { deviceIds: [agent.deviceId] }, maxAttempts: 1 })
    const [failed] = await rowsWhen(coordinator, task.id, 1, 'the device to report the full disk', row => row.state === 'failed')
    t.regex(failed.message, /not enough disk space in .*: .* MiB needed, .* MiB free; free some space; trying again at .* \(not counted as a failed attempt\)/)
    t.not(failed.final, true, 'the task is not over for the device')
    t.true(failed.retryAt > 0)
    // Still running, still enrolled, still talking to the coordinator.
    t.is(agent.child.exitCode, null)
    await rm(join(mount, 'ballast'))
    const [row] = await rowsWhen(coordinator, task.id, 1, 'the device to succeed once space is freed', candidate => candidate.state === 'succeeded')
    t.is(row.attempt, 1, 'the full disk did not use up the attempt')
    t.is(await sha256OfFile(join(agent.installRoot, 'srv/full/payload.bin')), pkg.sha256)
    await exactHistory(coordinator, task.id, agent.deviceId)
  } finally {
    await stopAll(agents, [coordinator], work, t.passed)
    if (mounted) await run('umount', [mount]).catch(async () => await run('umount', ['-l', mount]))
    await rm(mount, { recursive: true, force: true })
  }
})
