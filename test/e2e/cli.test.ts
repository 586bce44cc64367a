import test from 'ava'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli as cli, startAgentProcess, startCoordinatorProcess } from '../helpers/processes.js'

test('an operator deploys with the CLI alone, and scripts can rely on its exit codes', async t => {
  const coordinator = await startCoordinatorProcess()
  const work = await mkdtemp(join(tmpdir(), 'md-cli-'))
  const env = { MESHDEPLOY_URL: coordinator.url, MESHDEPLOY_TOKEN: coordinator.adminToken }
  let agent
  try {
    const file = join(work, 'hello.sh')
    await writeFile(file, '#!/bin/sh\nmkdir -p "$MESHDEPLOY_INSTALL_ROOT/opt/hello"\necho "$@" > "$MESHDEPLOY_INSTALL_ROOT/opt/hello/args"\n')
    const added = await cli(['package', 'add', file, '--name', 'hello', '--version', '2.0', '--detect-file', '/opt/hello/args', '--json'], env)
    t.is(added.code, 0, added.stderr)
    const pkg = JSON.parse(added.stdout)
    t.is(pkg.kind, 'shell')
    const listed = await cli(['package', 'list'], env)
    t.regex(listed.stdout, /hello\s+2\.0\s+shell/)
    const shown = await cli(['package', 'show', pkg.id.slice(0, 10), '--json'], env)
    t.is(JSON.parse(shown.stdout).id, pkg.id, 'a unique prefix names the package')

    const token = (await cli(['enrollment-token', 'create', '--max-uses', '1', '--groups', 'lab'], env)).stdout.trim()
    t.regex(token, /^mde_/)
    agent = await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname: 'cli-pc', groups: ['lab'] })

    const usage = await cli(['task', 'create', '--package', pkg.id], env)
    t.is(usage.code, 2, 'no targets is a usage error')
    t.regex(usage.stderr, /name targets/)
    const created = await cli(['task', 'create', '--package', pkg.id.slice(0, 10), '--groups', 'lab', '--run-args', '--greeting "hello world"', '--json'], env)
    t.is(created.code, 0, created.stderr)
    const task = JSON.parse(created.stdout)
    t.is(task.resolvedDevices, 1)
    const watched = await cli(['task', 'watch', task.id, '--json', '--interval-ms', '200'], env)
    t.is(watched.code, 0, watched.stderr)
    const final = JSON.parse(watched.stdout)
    t.is(final.devices[0].state, 'succeeded')

    const devices = JSON.parse((await cli(['device', 'list', '--json'], env)).stdout)
    t.deepEqual(devices.map((device: any) => [device.hostname, device.groups, device.online]), [['cli-pc', ['lab'], true]])
    const deviceView = await cli(['device', 'show', agent.deviceId], env)
    t.regex(deviceView.stdout, new RegExp(`${task.id}.*succeeded`))

    const missing = await cli(['task', 'show', 'task-0000'], env)
    t.is(missing.code, 3)
    t.regex(missing.stderr, /task task-0000 does not exist/)
    const unauthorized = await cli(['package', 'list'], { ...env, MESHDEPLOY_TOKEN: 'mdo_wrong' })
    t.is(unauthorized.code, 3)
    const unreachable = await cli(['package', 'list'], { ...env, MESHDEPLOY_URL: 'http://127.0.0.1:1' })
    t.is(unreachable.code, 4)

    const removed = await cli(['package', 'rm', pkg.id.slice(0, 10)], env)
    t.is(removed.code, 0)
    t.regex(removed.stdout, /deleted/)
  } finally {
    await agent?.stop()
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
