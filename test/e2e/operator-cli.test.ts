import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BIN, startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'

const exec = promisify(execFile)

interface CliResult {
  code: number
  stdout: string
  stderr: string
}

async function cli (coordinator: CoordinatorProcess, args: string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [BIN, ...args], { env: { ...process.env, MESHDEPLOY_URL: coordinator.url, MESHDEPLOY_TOKEN: coordinator.adminToken }, timeout: 60_000 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const failed = error as { code?: number, stdout?: string, stderr?: string }
    return { code: failed.code ?? -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' }
  }
}

test('operators drive the directory, self-service, targeting and security verification from the CLI; the agent requests with its own command', async t => {
  const coordinator = await startCoordinatorProcess()
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-cli-'))
  let agent: AgentProcess | undefined
  try {
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', {})
    agent = await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: 'pc-sales-01' })
    const staff = join(work, 'staff.csv')
    await writeFile(staff, 'id,name,department,role,devices\nalice,"Martin, Alice",Sales/EMEA,manager,PC-SALES-01\nbob,Bob Stone,Engineering,developer,pc-eng-07\n')
    const imported = await cli(coordinator, ['user', 'import', staff])
    t.is(imported.code, 0, imported.stderr)
    t.regex(imported.stdout, /imported 2 people: 2 new/)

    const script = join(work, 'tool.sh')
    await writeFile(script, '#!/bin/sh\nmkdir -p "$MESHDEPLOY_INSTALL_ROOT/opt/tool" && echo 1.0 > "$MESHDEPLOY_INSTALL_ROOT/opt/tool/VERSION"\n')
    const added = await cli(coordinator, ['package', 'add', script, '--name', 'tool', '--version', '1.0', '--detect-file', '/opt/tool/VERSION', '--self-service', '--exit-code', '30=success-reboot-required', '--json'])
    t.is(added.code, 0, added.stderr)
    const pkg = JSON.parse(added.stdout)
    t.like(pkg, { kind: 'shell', selfService: true, exitCodes: { 30: 'success-reboot-required' } })

    const requested = await cli(coordinator, ['agent', 'request', 'tool', '--data', agent.dataDir, '--insecure-http', '--user', 'alice', '--reason', 'quarterly report'])
    t.is(requested.code, 0, requested.stderr)
    const requestId = /request (req-[0-9a-f]+) for tool 1\.0 is pending/.exec(requested.stdout)?.[1]
    t.truthy(requestId, requested.stdout)
    t.regex((await cli(coordinator, ['request', 'list', '--status', 'pending'])).stdout, new RegExp(`${requestId!}\\s+tool 1\\.0\\s+pc-sales-01\\s+alice\\s+pending`))
    const approved = await cli(coordinator, ['request', 'approve', requestId!, '--comment', 'ok'])
    t.regex(approved.stdout, /approved; task (task-[0-9a-f]+) installs tool on pc-sales-01/)
    const taskId = /task (task-[0-9a-f]+)/.exec(approved.stdout)![1]
    await waitFor(async () => (await coordinator.api.get(`/v1/tasks/${taskId}/devices`)).devices[0]?.state === 'succeeded' ? true : undefined, 'the approved install', 60_000, 200)
    t.is(await readFile(join(agent.installRoot, 'opt/tool/VERSION'), 'utf8'), '1.0\n')

    const targeted = await cli(coordinator, ['task', 'create', '--package', pkg.id.slice(0, 10), '--departments', 'Sales', '--devices-per-minute', '10', '--reboot', 'prompt', '--reboot-deadline-seconds', '300', '--json'])
    t.is(targeted.code, 0, targeted.stderr)
    const task = JSON.parse(targeted.stdout)
    t.like(task, { resolvedDevices: 1, devicesPerMinute: 10, reboot: { policy: 'prompt', deadlineSeconds: 300 } })
    await waitFor(async () => (await coordinator.api.get(`/v1/tasks/${task.id as string}/devices`)).devices[0]?.state === 'already-installed' ? true : undefined, 'detection by the department task', 60_000, 200)
    const running = await cli(coordinator, ['task', 'edit', task.id, '--max-attempts', '5'])
    t.is(running.code, 3)
    t.regex(running.stderr, /pause it first/)

    const keyFile = join(work, 'publisher.key')
    t.is((await cli(coordinator, ['publisher', 'keygen', '--out', keyFile, '--name', 'Example Ltd'])).code, 0)
    t.is((await cli(coordinator, ['publisher', 'add', 'Example Ltd', '--key', keyFile])).code, 0)
    t.regex((await cli(coordinator, ['settings', 'set', 'security-verification=on'])).stdout, /security-verification\s+on/)
    const v2 = join(work, 'tool-2.sh')
    await writeFile(v2, '#!/bin/sh\necho 2.0\n')
    const unsigned = await cli(coordinator, ['package', 'add', v2, '--name', 'tool', '--version', '2.0'])
    t.is(unsigned.code, 3)
    t.regex(unsigned.stderr, /security verification is on: the upload must carry a publisher signature/)
    const signature = join(work, 'tool-2.sig')
    t.is((await cli(coordinator, ['package', 'sign', v2, '--key', keyFile, '--out', signature])).code, 0)
    const signed = await cli(coordinator, ['package', 'add', v2, '--name', 'tool', '--version', '2.0', '--signature', signature])
    t.is(signed.code, 0, signed.stderr)
    t.regex(signed.stdout, /signed by Example Ltd/)
  } finally {
    await agent?.stop()
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
