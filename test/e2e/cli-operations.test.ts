import test from 'ava'
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, stat, writeFile, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { BIN, startAgentProcess, startCoordinatorProcess } from '../helpers/processes.js'

const exec = promisify(execFile)

async function cli (args: string[], env: Record<string, string>): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, timeout: 120_000, maxBuffer: 64 * 1024 * 1024 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const failed = error as { code: number, stdout: string, stderr: string }
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr }
  }
}

test('the CLI downloads packages verified, follows events, and reads history, health, identity, stats, metrics and the API document', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: 64 })
  const work = await mkdtemp(join(tmpdir(), 'md-cli-ops-'))
  const env = { MESHDEPLOY_URL: coordinator.url, MESHDEPLOY_TOKEN: coordinator.adminToken }
  let agent
  try {
    const payload = randomBytes(700_000)
    await writeFile(join(work, 'data.bin'), payload)
    const pkg = JSON.parse((await cli(['package', 'add', join(work, 'data.bin'), '--name', 'data', '--version', '1', '--json'], env)).stdout)

    const downloaded = await cli(['package', 'download', pkg.id.slice(0, 12), '--out', join(work, 'copy.bin')], env)
    t.is(downloaded.code, 0, downloaded.stderr)
    t.deepEqual(await readFile(join(work, 'copy.bin')), payload)

    // A chunk damaged on the coordinator's disk: the download refuses it and leaves no file behind.
    const { chunks } = await coordinator.api.get(`/v1/packages/${pkg.id}?chunks=true`)
    const victim = join(coordinator.dataDir, 'content', chunks[3].slice(0, 2), chunks[3])
    const original = await readFile(victim)
    await writeFile(victim, randomBytes(original.byteLength))
    const refused = await cli(['package', 'download', pkg.id, '--out', join(work, 'bad.bin')], env)
    t.is(refused.code, 4)
    t.regex(refused.stderr, /chunk 3 hash mismatch/)
    t.false((await readdir(work)).some(name => name.startsWith('bad.bin')), 'no file, not even a partial one')
    await writeFile(victim, original)

    const events = spawn(process.execPath, [BIN, 'events'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    const lines = createInterface({ input: events.stdout })
    const seen: Array<{ event: string, data: any }> = []
    const ready = new Promise<void>(resolve => { lines.on('line', line => { const parsed = JSON.parse(line); seen.push(parsed); if (parsed.event === 'ready') resolve() }) })
    await ready

    const { token } = await coordinator.api.post('/v1/enrollment-tokens', {})
    agent = await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: 'ops-pc' })
    const task = JSON.parse((await cli(['task', 'create', '--package', pkg.id, '--action', 'distribute-files', '--destination', '/srv/data', '--all', '--json'], env)).stdout)
    t.is((await cli(['task', 'watch', task.id, '--json'], env)).code, 0)
    const history = JSON.parse((await cli(['task', 'history', task.id, agent.deviceId, '--json'], env)).stdout)
    t.is(history.at(-1).state, 'succeeded')
    t.true(history.some((record: any) => record.state === 'downloading'))
    const shown = await cli(['task', 'history', task.id, agent.deviceId], env)
    t.regex(shown.stdout, /succeeded/)

    // Wait for the success to come through the event stream too, then stop the follower like a person would.
    const deadline = Date.now() + 30_000
    while (!seen.some(entry => JSON.stringify(entry.data).includes('succeeded')) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
    t.true(seen.some(entry => JSON.stringify(entry.data).includes('succeeded')), 'the device\'s success arrived as an event')
    events.kill('SIGINT')
    const exitCode = await new Promise(resolve => events.once('exit', resolve))
    t.is(exitCode, 0)

    const health = await cli(['health', '--url', coordinator.url], { MESHDEPLOY_TOKEN: '' })
    t.regex(health.stdout, /^ok: meshdeploy/)
    const whoami = JSON.parse((await cli(['whoami', '--json'], env)).stdout)
    t.is(whoami.role, 'admin')
    const stats = JSON.parse((await cli(['stats', '--json'], env)).stdout)
    t.true(stats.origin.bytesServed >= payload.byteLength * 2)
    const metrics = await cli(['metrics'], env)
    t.regex(metrics.stdout, /meshdeploy_origin_bytes_served_total \d+/)
    const openapi = JSON.parse((await cli(['openapi'], env)).stdout)
    t.is(openapi.openapi, '3.1.0')
    t.truthy((await stat(join(work, 'copy.bin'))).size)
  } finally {
    await agent?.stop()
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
