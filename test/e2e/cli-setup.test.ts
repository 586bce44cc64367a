import test from 'ava'
import { execFile } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BIN, startCoordinatorProcess, startMeshdeploy } from '../helpers/processes.js'

const exec = promisify(execFile)

async function cli (args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [BIN, ...args], { env, timeout: 60_000 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const failed = error as { code: number, stdout: string, stderr: string }
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr }
  }
}

function cleanEnv (extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra }
  delete env.MESHDEPLOY_URL
  delete env.MESHDEPLOY_TOKEN
  return { ...env, ...extra }
}

test('the CLI reads the coordinator URL and token from its config file, below options and environment', async t => {
  const coordinator = await startCoordinatorProcess()
  const home = await mkdtemp(join(tmpdir(), 'md-config-'))
  try {
    await mkdir(join(home, 'meshdeploy'))
    await writeFile(join(home, 'meshdeploy', 'config.yaml'), `url: ${coordinator.url}\ntoken: ${coordinator.adminToken}\n`, { mode: 0o600 })
    const fromFile = await cli(['package', 'list', '--json'], cleanEnv({ XDG_CONFIG_HOME: home }))
    t.is(fromFile.code, 0, fromFile.stderr)
    t.deepEqual(JSON.parse(fromFile.stdout), [])
    const envWins = await cli(['package', 'list'], cleanEnv({ XDG_CONFIG_HOME: home, MESHDEPLOY_TOKEN: 'mdo_wrong' }))
    t.is(envWins.code, 3)
    const optionWins = await cli(['package', 'list', '--url', 'http://127.0.0.1:1'], cleanEnv({ XDG_CONFIG_HOME: home }))
    t.is(optionWins.code, 4)
    await writeFile(join(home, 'meshdeploy', 'config.yaml'), 'url: [not a url\n')
    const broken = await cli(['package', 'list'], cleanEnv({ XDG_CONFIG_HOME: home }))
    t.is(broken.code, 2)
    t.regex(broken.stderr, /config\.yaml/)
  } finally {
    await coordinator.stop()
    await rm(home, { recursive: true, force: true })
  }
})

test('the coordinator starts from a YAML config, and refuses a wrong one clearly', async t => {
  const work = await mkdtemp(join(tmpdir(), 'md-coordinator-config-'))
  try {
    await writeFile(join(work, 'coordinator.yaml'), `data: ${join(work, 'data')}\nport: 0\nlogLevel: warn\nchunkSizeKib: 256\n`)
    const coordinator = await startMeshdeploy(['coordinator', 'start', '--config', join(work, 'coordinator.yaml')], join(work, 'log'), 'coordinator-started')
    t.truthy((await stat(join(work, 'data', 'admin-token'))).isFile())
    t.regex(coordinator.event.url, /^http:\/\/127\.0\.0\.1:\d+$/)
    await coordinator.stop()
    await writeFile(join(work, 'bad.yaml'), 'port: high\nsurprise: 1\n')
    const bad = await cli(['coordinator', 'start', '--config', join(work, 'bad.yaml')], process.env)
    t.is(bad.code, 2)
    t.regex(bad.stderr, /port/)
  } finally {
    await rm(work, { recursive: true, force: true })
  }
})

test('shell completion follows the command tree', async t => {
  const top = await cli(['__complete'], process.env)
  for (const name of ['package', 'task', 'agent', 'completion']) t.true(top.stdout.split('\n').includes(name), name)
  const task = (await cli(['__complete', 'task'], process.env)).stdout.split('\n')
  t.true(task.includes('watch'))
  const create = (await cli(['__complete', 'task', 'create'], process.env)).stdout.split('\n')
  t.true(create.includes('--bandwidth-kbps'))
  const bash = await cli(['completion', 'bash'], process.env)
  t.regex(bash.stdout, /complete -o default -F _meshdeploy meshdeploy/)
  const unknown = await cli(['completion', 'tcsh'], process.env)
  t.is(unknown.code, 2)
})

test('install-service enrolls, writes a unit without secrets, and enables it through systemctl', async t => {
  const coordinator = await startCoordinatorProcess()
  const work = await mkdtemp(join(tmpdir(), 'md-service-'))
  try {
    const bin = join(work, 'bin')
    await mkdir(bin)
    const calls = join(work, 'systemctl-calls')
    await writeFile(join(bin, 'systemctl'), `#!/bin/sh\necho "$@" >> ${calls}\n`)
    await chmod(join(bin, 'systemctl'), 0o755)
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', {})
    const result = await cli([
      'agent', 'install-service', '--data', join(work, 'agent'), '--coordinator', coordinator.url, '--enroll-token', token,
      '--site', 'lab', '--unit-dir', join(work, 'units'), '--insecure-http'
    ], { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` })
    t.is(result.code, 0, result.stderr)
    t.regex(result.stdout, /enrolled as dev-/)
    const unit = await readFile(join(work, 'units', 'meshdeploy-agent.service'), 'utf8')
    t.regex(unit, new RegExp(`ExecStart=\\S+ \\S+meshdeploy.js agent start --data ${join(work, 'agent')} --insecure-http`))
    t.false(unit.includes(token), 'the unit holds no enrollment secret')
    t.regex(unit, /Restart=on-failure/)
    t.deepEqual((await readFile(calls, 'utf8')).trim().split('\n'), ['daemon-reload', 'enable --now meshdeploy-agent.service'])
    t.is(JSON.parse(await readFile(join(work, 'agent', 'agent.json'), 'utf8')).site, 'lab')
    const devices = (await coordinator.api.get('/v1/devices')).devices
    t.is(devices.length, 1)
  } finally {
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
