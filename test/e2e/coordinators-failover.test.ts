import '../../protocol/polyfill.js'
import anyTest, { type TestFn } from 'ava'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { sha256OfFile } from '../../protocol/index.js'
import { TestBalancer } from '../helpers/balancer.js'
import { TestPostgres, postgresSkipReason } from '../helpers/postgres.js'
import { freePort, startAgentProcess, startMeshdeploy, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'
import { exactHistory, rowsWhen, stopAll, uploadRandom } from '../helpers/status.js'

const skipReason = postgresSkipReason()
const test = (skipReason === undefined ? anyTest.serial : anyTest.skip) as TestFn
if (skipReason !== undefined) console.log(`coordinator failover tests skipped: ${skipReason}`)

let server: TestPostgres | undefined
anyTest.before(async () => { if (skipReason === undefined) server = await TestPostgres.start() })
anyTest.after.always(async () => { await server?.stop() })

const KIB = 1024

/** A coordinator process on the shared database and content folder; the admin token is the first coordinator's. */
async function startShared (store: string, contentDir: string, port: number, adminToken?: string): Promise<CoordinatorProcess> {
  const dataDir = await mkdtemp(join(tmpdir(), 'md-e2e-shared-'))
  const args = ['coordinator', 'start', '--data', dataDir, '--port', String(port), '--host', '127.0.0.1', '--log-level', 'info', '--chunk-size-kib', '64', '--content-dir', contentDir]
  const managed = await startMeshdeploy(args, `${dataDir}.log`, 'coordinator-started', { env: { ...process.env, MESHDEPLOY_STORE: store } })
  const token = adminToken ?? (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim()
  const url = managed.event.url as string
  return { ...managed, url, dataDir, adminToken: token, api: new ApiClient({ url, token }) }
}

test('two coordinator processes on one database: agents held on B get a task created on A at once; A killed mid-deployment, its agents carry on through B and every status record arrives once', async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-failover-'))
  const store = await server!.createDatabase()
  const contentDir = join(work, 'content')
  const [portA, portB] = [await freePort(), await freePort()]
  const coordinators: CoordinatorProcess[] = []
  const agents: AgentProcess[] = []
  let passed = false
  let balancer: TestBalancer | undefined
  try {
    const a = await startShared(store, contentDir, portA)
    coordinators.push(a)
    const b = await startShared(store, contentDir, portB, a.adminToken)
    coordinators.push(b)
    const log = await readFile(a.logFile, 'utf8')
    t.false(log.includes('password'), 'the store address is logged without secrets')

    // Two agents talk to B only; a task created through A reaches them.
    const { token } = await a.api.post('/v1/enrollment-tokens', { maxUses: 5 })
    for (const n of [1, 2]) agents.push(await startAgentProcess({ coordinatorUrl: b.url, enrollToken: token, hostname: `held-${n}`, site: 'branch' }))
    const small = await uploadRandom(a, work, 'small.bin', 32 * KIB)
    // Let both agents settle into a held request on B.
    await new Promise(resolve => setTimeout(resolve, 1500))
    const createdAt = Date.now()
    const wake = await a.api.post('/v1/tasks', { packageId: small.id, action: 'distribute-files', destination: '/srv/small', targets: { deviceIds: agents.map(agent => agent.deviceId) }, maxAttempts: 1 })
    const rows = await rowsWhen(b, wake.id, 2, 'the held agents to finish the task created on A', row => row.state === 'succeeded', 60_000)
    t.is(rows.length, 2)
    const reached: number[] = []
    for (const agent of agents) {
      const records = await exactHistory(b, wake.id, agent.deviceId)
      reached.push(Number(records[0].at) - createdAt)
    }
    t.log(`a task created on A reached the agents held on B after ${reached.join(' and ')} ms (their first status record)`)
    t.true(Math.max(...reached) < 1000, `under a second: ${reached.join(', ')} ms`)

    // The package uploaded through A is downloadable through B, byte for byte.
    for (const agent of agents) t.is(await sha256OfFile(join(agent.installRoot, 'srv/small/small.bin')), small.sha256)

    // Three agents behind a load balancer that prefers A: A is killed mid-deployment.
    balancer = await TestBalancer.start(() => [{ host: '127.0.0.1', port: portA }, { host: '127.0.0.1', port: portB }])
    const { token: lbToken } = await a.api.post('/v1/enrollment-tokens', { maxUses: 5 })
    const behind: AgentProcess[] = []
    for (const n of [1, 2, 3]) behind.push(await startAgentProcess({ coordinatorUrl: balancer.url, enrollToken: lbToken, hostname: `lb-${n}`, site: `lb-site-${n}` }))
    agents.push(...behind)
    const big = await uploadRandom(a, work, 'big.bin', 512 * KIB)
    // 64 KiB/s: each device takes about eight seconds, long enough to kill A in the middle.
    const task = await a.api.post('/v1/tasks', { packageId: big.id, action: 'distribute-files', destination: '/srv/big', targets: { deviceIds: behind.map(agent => agent.deviceId) }, maxAttempts: 1, bandwidthKBps: 64 })
    await waitFor(async () => {
      const { devices } = await a.api.get(`/v1/tasks/${task.id as string}/devices`)
      return devices.filter((row: any) => row.state === 'downloading' && row.bytesDone > 0).length === behind.length ? true : undefined
    }, 'every device to be downloading through A', 60_000, 100)
    await a.kill()
    const killedAt = Date.now()
    const before = (await b.api.get(`/v1/tasks/${task.id as string}/devices`)).devices.reduce((sum: number, row: any) => sum + row.seq, 0)
    await waitFor(async () => {
      const { devices } = await b.api.get(`/v1/tasks/${task.id as string}/devices`)
      return devices.reduce((sum: number, row: any) => sum + row.seq, 0) > before ? true : undefined
    }, 'B to hear from the devices', 60_000, 50)
    const failoverMs = Date.now() - killedAt
    t.log(`after A's SIGKILL, B stored the devices' next status record ${failoverMs} ms later`)
    const finished = await rowsWhen(b, task.id, behind.length, 'every device behind the balancer to finish through B', row => row.state === 'succeeded', 120_000)
    t.deepEqual(finished.map((row: any) => row.state), behind.map(() => 'succeeded'))
    for (const agent of behind) {
      await exactHistory(b, task.id, agent.deviceId)
      t.is(await sha256OfFile(join(agent.installRoot, 'srv/big/big.bin')), big.sha256)
    }
    const view = await b.api.get(`/v1/tasks/${task.id as string}`)
    t.is(view.progress.succeeded, behind.length, 'progress counts every device once')
    passed = true
  } finally {
    await balancer?.stop()
    await stopAll(agents, coordinators, work, passed)
  }
})
