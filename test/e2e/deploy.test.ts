import test from 'ava'
import { randomBytes } from 'node:crypto'
import { readdir, readFile, writeFile, mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildSamplePackage } from '../../coordinator/cli/demo.js'
import { sha256OfFile } from '../../protocol/index.js'
import { freePort, startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'

const SETTLED = new Set(['succeeded', 'already-installed', 'not-applicable', 'cancelled', 'expired'])

async function rowsOf (coordinator: CoordinatorProcess, taskId: string): Promise<any[]> {
  return (await coordinator.api.get(`/v1/tasks/${taskId}/devices`)).devices
}

async function settled (coordinator: CoordinatorProcess, taskId: string, count: number, timeoutMs = 90_000): Promise<any[]> {
  return await waitFor(async () => {
    const rows = await rowsOf(coordinator, taskId)
    return rows.length === count && rows.every(row => SETTLED.has(row.state) || (row.state === 'failed' && row.final === true)) ? rows : undefined
  }, `task ${taskId} to settle`, timeoutMs, 200)
}

async function cacheChunks (agent: AgentProcess): Promise<Set<string>> {
  const root = join(agent.dataDir, 'cache')
  const out = new Set<string>()
  for (const prefix of await readdir(root)) if (prefix !== 'tmp') for (const name of await readdir(join(root, prefix))) out.add(name)
  return out
}

test('a coordinator and three agents deploy a package; installed files match', async t => {
  const coordinator = await startCoordinatorProcess()
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-pkg-'))
  const agents: AgentProcess[] = []
  try {
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: 3 })
    for (let index = 1; index <= 3; index++) agents.push(await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: `pc-${index}`, site: 'hq' }))
    const sample = await buildSamplePackage(work, 4)
    const pkg = await coordinator.api.uploadPackage(sample.file, { name: 'sample', version: sample.version, detection: { type: 'file', path: '/opt/meshdeploy-demo/payload.bin', sha256: sample.payloadSha256 } })
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { sites: ['hq'] }, maxAttempts: 1 })
    t.is(task.resolvedDevices, 3)
    const rows = await settled(coordinator, task.id, 3)
    t.deepEqual(rows.map(row => row.state), ['succeeded', 'succeeded', 'succeeded'])
    for (const row of rows) {
      t.is(row.exitCode, 0)
      t.is(row.bytesFromOrigin + row.bytesFromPeers, pkg.sizeBytes, 'every byte counted once, from peers or from the origin')
    }
    for (const agent of agents) {
      t.is(await sha256OfFile(join(agent.installRoot, 'opt/meshdeploy-demo/payload.bin')), sample.payloadSha256)
    }
    const view = await coordinator.api.get(`/v1/tasks/${task.id}`)
    t.is(view.progress.percent, 100)
    t.is(view.progress.succeeded, 3)
  } finally {
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})

test('an agent killed mid-download resumes and fetches only the chunks it did not have', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-pkg-'))
  let agent: AgentProcess | undefined
  try {
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', {})
    agent = await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: 'pc-resume' })
    const file = join(work, 'payload.bin')
    await writeFile(file, randomBytes(6 * 1024 * 1024))
    const pkg = await coordinator.api.uploadPackage(file, { name: 'payload', version: '1' })
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv/payload', targets: { all: true }, bandwidthKBps: 3072 })
    const first = agent
    await waitFor(async () => (await cacheChunks(first)).size >= 24 ? true : undefined, 'a quarter of the chunks', 60_000, 50)
    await first.kill()
    const held = await cacheChunks(first)
    t.true(held.size < pkg.chunkCount, 'killed before the end')
    const servedBefore = (await coordinator.api.get('/v1/stats')).origin.bytesServed
    agent = await startAgentProcess({ coordinatorUrl: coordinator.url, hostname: 'pc-resume', dataDir: first.dataDir })
    t.is(agent.deviceId, first.deviceId, 'the restarted agent keeps its identity')
    const [row] = await settled(coordinator, task.id, 1)
    t.is(row.state, 'succeeded')
    const servedAfter = (await coordinator.api.get('/v1/stats')).origin.bytesServed
    const missing = pkg.chunkCount - held.size
    t.is(servedAfter - servedBefore, missing * 65536, `fetched ${missing} missing chunks and nothing else`)
    t.is(await sha256OfFile(join(agent.installRoot, 'srv/payload/payload.bin')), pkg.sha256)
    t.log(`held ${held.size} of ${pkg.chunkCount} chunks at the kill; fetched ${(servedAfter - servedBefore) / 65536} after the restart`)
  } finally {
    await agent?.stop()
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})

test('an origin chunk with a wrong hash is refused and the device reports why', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-pkg-'))
  let agent: AgentProcess | undefined
  try {
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', {})
    agent = await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: 'pc-bad-chunk' })
    const file = join(work, 'tool.sh')
    await writeFile(file, '#!/bin/sh\necho ok > "$MESHDEPLOY_INSTALL_ROOT/installed"\n: ' + randomBytes(150_000).toString('hex') + '\n')
    const pkg = await coordinator.api.uploadPackage(file, { name: 'tool', version: '1' })
    const { chunks } = await coordinator.api.get(`/v1/packages/${pkg.id}?chunks=true`)
    const victim = join(coordinator.dataDir, 'content', chunks[1].slice(0, 2), chunks[1])
    await writeFile(victim, randomBytes((await stat(victim)).size))
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { all: true }, maxAttempts: 1 })
    const [row] = await settled(coordinator, task.id, 1)
    t.is(row.state, 'failed')
    t.true(row.final)
    t.regex(row.message, /chunk 1 failed its hash check/)
    t.regex(row.message, /HashMismatchError/)
    t.false((await cacheChunks(agent)).has(chunks[1]), 'the bad chunk was not stored')
    await t.throwsAsync(stat(join(agent.installRoot, 'installed')), undefined, 'nothing was installed')
  } finally {
    await agent?.stop()
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})

test('a manifest signed by another key is refused and reported; the agent keeps its state', async t => {
  const port = await freePort()
  let coordinator = await startCoordinatorProcess({ port })
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-pkg-'))
  let agent: AgentProcess | undefined
  try {
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', {})
    agent = await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: 'pc-pinned' })
    const pinned = JSON.parse(await readFile(join(agent.dataDir, 'agent.json'), 'utf8')).coordinatorPublicKey
    await coordinator.stop()
    // Someone replaces the coordinator's signing key: its manifests no longer verify against the pinned key.
    await rm(join(coordinator.dataDir, 'signing-key.json'))
    coordinator = await startCoordinatorProcess({ port, dataDir: coordinator.dataDir })
    const file = join(work, 'tool.sh')
    await writeFile(file, '#!/bin/sh\necho ok > "$MESHDEPLOY_INSTALL_ROOT/installed"\n')
    const pkg = await coordinator.api.uploadPackage(file, { name: 'tool', version: '1' })
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { all: true } })
    const row = await waitFor(async () => {
      const [current] = await rowsOf(coordinator, task.id)
      return current?.state === 'failed' ? current : undefined
    }, 'the refusal', 60_000, 200)
    t.regex(row.message, /manifest refused: UnknownKeyError/)
    t.is(JSON.parse(await readFile(join(agent.dataDir, 'agent.json'), 'utf8')).coordinatorPublicKey, pinned, 'the pinned key is unchanged')
    await t.throwsAsync(stat(join(agent.installRoot, 'installed')))
  } finally {
    await agent?.stop()
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
