import test from 'ava'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeTestCertificates } from '../helpers/tls.js'
import { runCli as cli, startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'

const SETTLED = new Set(['succeeded', 'failed'])

async function settledStates (coordinator: CoordinatorProcess, taskId: string, count: number): Promise<string[]> {
  return await waitFor(async () => {
    const { devices } = await coordinator.api.get(`/v1/tasks/${taskId}/devices`)
    return devices.length === count && devices.every((row: any) => SETTLED.has(row.state)) ? devices.map((row: any) => `${row.hostname}:${row.state}`).sort() : undefined
  }, `task ${taskId} to settle`, 90_000, 200)
}

test('over HTTPS: agents trusting a CA or a pinned certificate deploy, follow a key rotation made with the CLI, and a blocked device drops out; every change is in the audit log', async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-secure-'))
  const certificates = await makeTestCertificates(work)
  const coordinator = await startCoordinatorProcess({ extraArgs: ['--tls-cert', certificates.certPath, '--tls-key', certificates.keyPath], apiTls: { caPem: certificates.caPem } })
  const agents: AgentProcess[] = []
  try {
    t.regex(coordinator.url, /^https:\/\/127\.0\.0\.1:\d+$/)
    const admin = { MESHDEPLOY_URL: coordinator.url, MESHDEPLOY_TOKEN: coordinator.adminToken, MESHDEPLOY_CA: certificates.caPath }

    const created = await cli(['token', 'create', '--role', 'operator', '--name', 'ci', '--json'], admin)
    t.is(created.code, 0, created.stderr)
    const ci = { ...admin, MESHDEPLOY_TOKEN: JSON.parse(created.stdout).token }
    const tokenList = await cli(['token', 'list'], admin)
    t.regex(tokenList.stdout, /ci\s+operator\s+yes/)
    t.false(tokenList.stdout.includes(ci.MESHDEPLOY_TOKEN), 'no secret in the list')
    const forbidden = await cli(['token', 'create', '--role', 'admin', '--name', 'escalate'], ci)
    t.is(forbidden.code, 3, 'an operator may not make tokens')

    const enrollToken = (await cli(['enrollment-token', 'create', '--max-uses', '2', '--site', 'hq'], ci)).stdout.trim()
    agents.push(await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken, hostname: 'by-ca', extraArgs: ['--ca', certificates.caPath] }))
    agents.push(await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken, hostname: 'by-pin', extraArgs: ['--pin-sha256', certificates.fingerprint.match(/../g)!.join(':').toUpperCase()] }))

    const script = join(work, 'tool.sh')
    await writeFile(script, '#!/bin/sh\necho "$@" >> "$MESHDEPLOY_INSTALL_ROOT/runs"\n')
    const pkg = JSON.parse((await cli(['package', 'add', script, '--name', 'tool', '--version', '1', '--json'], ci)).stdout)
    const first = JSON.parse((await cli(['task', 'create', '--package', pkg.id, '--all', '--run-args', 'first', '--json'], ci)).stdout)
    t.deepEqual(await settledStates(coordinator, first.id, 2), ['by-ca:succeeded', 'by-pin:succeeded'])

    const rotated = await cli(['key', 'rotate', '--json'], admin)
    t.is(rotated.code, 0, rotated.stderr)
    const rotation = JSON.parse(rotated.stdout)
    t.is(rotation.sequence, 1)
    for (const agent of agents) {
      await waitFor(async () => {
        const stored = JSON.parse(await readFile(join(agent.dataDir, 'agent.json'), 'utf8'))
        return stored.coordinatorPublicKey === rotation.publicKey && stored.coordinatorKeySequence === 1 ? true : undefined
      }, `${agent.deviceId} to pin the new key`, 60_000, 200)
    }
    const second = JSON.parse((await cli(['task', 'create', '--package', pkg.id, '--all', '--run-args', 'second', '--json'], ci)).stdout)
    t.deepEqual(await settledStates(coordinator, second.id, 2), ['by-ca:succeeded', 'by-pin:succeeded'], 'manifests signed by the new key are accepted')

    const blocked = await cli(['device', 'block', agents[1].deviceId, '--reason', 'lost'], ci)
    t.regex(blocked.stdout, /is blocked/)
    t.regex((await cli(['device', 'list'], ci)).stdout, /by-pin.*blocked/)
    const third = JSON.parse((await cli(['task', 'create', '--package', pkg.id, '--all', '--run-args', 'third', '--json'], ci)).stdout)
    t.is(third.resolvedDevices, 1)
    t.deepEqual(await settledStates(coordinator, third.id, 1), ['by-ca:succeeded'])
    t.is((await readFile(join(agents[1].installRoot, 'runs'), 'utf8')).trim(), 'first\nsecond', 'the blocked device ran nothing more')

    const audit = JSON.parse((await cli(['audit', '--since', '1h', '--all', '--json'], admin)).stdout)
    const changes = audit.entries.map((entry: any) => `${entry.actor} ${entry.method} ${entry.route}`).reverse()
    t.deepEqual(changes, [
      'admin POST /v1/tokens',
      'ci POST /v1/enrollment-tokens',
      'ci POST /v1/packages',
      'ci POST /v1/tasks',
      'admin POST /v1/keys/rotate',
      'ci POST /v1/tasks',
      'ci POST /v1/devices/:id/block',
      'ci POST /v1/tasks'
    ])
    const byCi = JSON.parse((await cli(['audit', '--actor', 'ci', '--json'], admin)).stdout)
    t.is(byCi.entries.length, 6)

    const ciId = JSON.parse((await cli(['token', 'list', '--json'], admin)).stdout).find((token: any) => token.name === 'ci').id
    t.is((await cli(['token', 'revoke', ciId], admin)).code, 0)
    const afterRevoke = await cli(['task', 'list'], ci)
    t.is(afterRevoke.code, 3)
    t.regex(afterRevoke.stderr, /revoked/)

    const wrongPin = await cli(['task', 'list'], { ...admin, MESHDEPLOY_CA: '', MESHDEPLOY_PIN_SHA256: 'ab'.repeat(32) })
    t.is(wrongPin.code, 4)
    t.regex(wrongPin.stderr, /not the pinned/)
    const noTrust = await cli(['task', 'list'], { ...admin, MESHDEPLOY_CA: '' })
    t.is(noTrust.code, 4)
    t.regex(noTrust.stderr, /not trusted/)
    const plain = await cli(['task', 'list'], { ...admin, MESHDEPLOY_URL: 'http://deploy.example.org:8650' })
    t.is(plain.code, 2)
    t.regex(plain.stderr, /--insecure-http/)
  } finally {
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
