import test, { type ExecutionContext } from 'ava'
import { execFile } from 'node:child_process'
import { chmod, chown, copyFile, lstat, mkdir, readFile, readlink, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { startCoordinator } from '../../coordinator/main.js'
import { AGENT_VERSION } from '../../agent/version.js'
import { silentLogger } from '../../protocol/logger.js'
import { AGENT_CAPABILITIES } from '../../packaging/service-definitions.js'
import { builtAgentPackages, hasProgram, inCi, missingBuildTools } from '../helpers/agent-packages.js'
import { startMeshdeploy, waitFor } from '../helpers/processes.js'
import { tempFolder } from '../helpers/temp.js'

const run = promisify(execFile)

const missing = await missingBuildTools()
const notRoot = process.getuid?.() !== 0
const reason = missing.length > 0 ? `${missing.join(' and ')} missing (apt-get install -y dpkg rpm)` : notRoot ? 'the packages are built and unpacked as root' : undefined
if (reason !== undefined) process.stderr.write(`\n  test/packaging/agent-packages ${inCi ? 'FAILS' : 'is SKIPPED'}: ${reason}\n\n`)
const packageTest = reason === undefined || inCi ? test : test.skip

function titled (title: string): string {
  return reason === undefined ? title : `${title} — ${inCi ? 'FAILED' : 'SKIPPED'}: ${reason}`
}

async function packagesOrFail (t: ExecutionContext): Promise<Awaited<ReturnType<typeof builtAgentPackages>> | undefined> {
  if (reason !== undefined) {
    t.fail(`required in CI: ${reason}`)
    return undefined
  }
  return await builtAgentPackages()
}

/** `dpkg-deb --contents` as path → [mode string, owner, link target]. */
async function debContents (deb: string): Promise<Map<string, { mode: string, owner: string, target?: string }>> {
  const { stdout } = await run('dpkg-deb', ['--contents', deb], { maxBuffer: 4 * 1024 * 1024 })
  const entries = new Map<string, { mode: string, owner: string, target?: string }>()
  for (const line of stdout.trim().split('\n')) {
    const [mode, owner, , , , path, arrow, target] = line.trim().split(/\s+/)
    entries.set(path.replace(/^\.\//, '/').replace(/(.)\/$/, '$1'), { mode, owner, ...(arrow === '->' ? { target } : {}) })
  }
  return entries
}

packageTest(titled('the .deb and the .rpm: metadata, file modes, maintainer scripts, and a unit systemd accepts'), async t => {
  const built = await packagesOrFail(t)
  if (built === undefined) return
  t.is(built.manifest.version, AGENT_VERSION)
  t.deepEqual(built.manifest.packages.map(entry => entry.format).sort(), ['deb', 'rpm'])
  for (const entry of built.manifest.packages) {
    t.is((await stat(join(built.dir, entry.file))).size, entry.sizeBytes)
    t.log(`${entry.file}: ${(entry.sizeBytes / 1024 / 1024).toFixed(1)} MiB (fast compression)`)
  }

  const field = async (name: string): Promise<string> => (await run('dpkg-deb', ['--field', built.deb, name])).stdout.trim()
  t.is(await field('Package'), 'meshdeploy-agent')
  t.is(await field('Version'), `${AGENT_VERSION}-1`)
  t.is(await field('Architecture'), 'amd64')
  t.regex(await field('Depends'), /libc6 \(>= 2\.28\)/)
  t.true(Number(await field('Installed-Size')) > 50_000, 'the executable carries its runtime')

  const contents = await debContents(built.deb)
  t.deepEqual(contents.get('/opt/meshdeploy-agent/bin/meshdeploy-agent'), { mode: '-rwxr-xr-x', owner: 'root/root' })
  t.deepEqual(contents.get('/opt/meshdeploy-agent/lib/classic-level.node'), { mode: '-rw-r--r--', owner: 'root/root' })
  t.deepEqual(contents.get('/opt/meshdeploy-agent/share/agent.yaml'), { mode: '-rw-r--r--', owner: 'root/root' })
  t.deepEqual(contents.get('/lib/systemd/system/meshdeploy-agent.service'), { mode: '-rw-r--r--', owner: 'root/root' })
  t.deepEqual(contents.get('/usr/bin/meshdeploy-agent'), { mode: 'lrwxrwxrwx', owner: 'root/root', target: '../../opt/meshdeploy-agent/bin/meshdeploy-agent' })
  t.false([...contents.keys()].some(path => path.startsWith('/etc/') || path.startsWith('/var/')), 'the config and the identity are the scripts\' to make and keep, not the package\'s files')
  t.false([...contents.keys()].some(path => /coordinator|console|bench/.test(path)))

  const work = await tempFolder(t, 'md-deb-control-')
  await run('dpkg-deb', ['--control', built.deb, work])
  for (const script of ['postinst', 'prerm', 'postrm']) {
    t.is((await stat(join(work, script))).mode & 0o777, 0o755, `${script} is executable`)
    await t.notThrowsAsync(run('sh', ['-n', join(work, script)]), `${script} is valid shell`)
  }
  t.regex(await readFile(join(work, 'postrm'), 'utf8'), /purge\) forget_identity/)

  const { stdout: rpmFiles } = await run('rpm', ['-qlp', built.rpm])
  t.deepEqual(rpmFiles.trim().split('\n'), [
    '/opt/meshdeploy-agent', '/opt/meshdeploy-agent/bin', '/opt/meshdeploy-agent/bin/meshdeploy-agent', '/opt/meshdeploy-agent/lib',
    '/opt/meshdeploy-agent/lib/classic-level.node', '/opt/meshdeploy-agent/share', '/opt/meshdeploy-agent/share/agent.yaml',
    '/opt/meshdeploy-agent/share/doc', '/opt/meshdeploy-agent/share/doc/THIRD-PARTY-NOTICES', '/usr/bin/meshdeploy-agent',
    '/usr/lib/systemd/system/meshdeploy-agent.service'
  ])
  const { stdout: rpmModes } = await run('rpm', ['-qp', '--queryformat', '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILENAMES}\n]', built.rpm])
  t.true(rpmModes.includes('-rwxr-xr-x root /opt/meshdeploy-agent/bin/meshdeploy-agent'))
  const { stdout: requires } = await run('rpm', ['-qp', '--requires', built.rpm])
  t.regex(requires, /\/usr\/sbin\/useradd/)
  t.regex(requires, /libstdc\+\+\.so\.6/, 'requirements found in the executable\'s ELF headers')
  const { stdout: scripts } = await run('rpm', ['-qp', '--scripts', built.rpm])
  t.regex(scripts, /preuninstall scriptlet[\s\S]*stop_and_disable/)

  // The unit as systemd reads it, in a root holding the unpacked package and systemd's own targets.
  if (!await hasProgram('systemd-analyze')) {
    if (inCi) t.fail('systemd-analyze is required in CI (.ci/run installs systemd)')
    else t.log('systemd-analyze is missing: the unit is not verified (apt-get install -y systemd)')
    return
  }
  const root = await tempFolder(t, 'md-unit-root-')
  await run('dpkg-deb', ['-x', built.deb, root])
  const { stdout: targets } = await run('sh', ['-c', 'ls /lib/systemd/system/*.target /lib/systemd/system/*.slice'])
  for (const file of targets.trim().split('\n')) await copyFile(file, join(root, 'lib/systemd/system', file.split('/').pop()!)).catch(() => {})
  const verified = await run('systemd-analyze', ['verify', `--root=${root}`, '/lib/systemd/system/meshdeploy-agent.service']).then(result => ({ code: 0, output: result.stdout + result.stderr }), error => ({ code: error.code as number, output: `${error.stdout as string}${error.stderr as string}` }))
  t.deepEqual(verified, { code: 0, output: '' }, 'systemd-analyze verify accepts the unit without a warning')
  const unit = await readFile(join(root, 'lib/systemd/system/meshdeploy-agent.service'), 'utf8')
  t.regex(unit, /^User=meshdeploy-agent$/m)
  t.regex(unit, new RegExp(`^AmbientCapabilities=${AGENT_CAPABILITIES.join(' ')}$`, 'm'))
})

packageTest(titled('the executable unpacked from the .deb runs as an unprivileged user with the unit\'s capabilities: --version, enrollment from the config file, an install task run as root'), async t => {
  const built = await packagesOrFail(t)
  if (built === undefined) return
  const root = await tempFolder(t, 'md-deb-root-')
  await run('dpkg-deb', ['-x', built.deb, root])
  const executable = join(root, 'opt/meshdeploy-agent/bin/meshdeploy-agent')
  t.is((await run(executable, ['--version'])).stdout.trim(), AGENT_VERSION)
  t.is((await run(join(root, 'usr/bin/meshdeploy-agent'), ['--version'])).stdout.trim(), AGENT_VERSION, 'the command on PATH resolves inside the unpacked tree')
  t.is(await readlink(join(root, 'usr/bin/meshdeploy-agent')), '../../opt/meshdeploy-agent/bin/meshdeploy-agent')

  const coordinator = await startCoordinator({ dataDir: join(root, 'coordinator'), port: 0, logger: silentLogger(), chunkSizeBytes: 64 * 1024 })
  const api = new ApiClient({ url: coordinator.url, token: coordinator.services.bootstrapAdminToken! })
  t.teardown(async () => { api.close(); await coordinator.close() })
  const { token } = await api.post('/v1/enrollment-tokens', { maxUses: 1, site: 'packaged' })

  // As the unit runs it: its own user, the unit's ambient capabilities, the settings in the config file.
  const data = join(root, 'var/lib/meshdeploy-agent')
  await mkdir(data, { recursive: true, mode: 0o750 })
  await chown(data, 65534, 65534)
  await mkdir(join(root, 'etc/meshdeploy'), { recursive: true })
  const config = join(root, 'etc/meshdeploy/agent.yaml')
  await writeFile(config, [
    (await readFile(join(root, 'opt/meshdeploy-agent/share/agent.yaml'), 'utf8')).replace(/^coordinator:$/m, `coordinator: ${coordinator.url}`).replace(/^enrollToken:$/m, `enrollToken: ${token as string}`).replace(/^data: .*$/m, `data: ${data}`),
    'insecureHttp: true', `installRoot: ${root}`, 'listen: [/ip4/127.0.0.1/tcp/0]', 'mdns: false', 'hostname: packaged-pc', ''
  ].join('\n'))
  await chmod(config, 0o640)
  const capabilities = AGENT_CAPABILITIES.map(name => `+${name.replace(/^CAP_/, '').toLowerCase()}`).join(',')
  const asUnit = await hasProgram('setpriv')
  if (!asUnit) {
    if (inCi) t.fail('setpriv (util-linux) is required in CI')
    else t.log('setpriv is missing: the agent runs as root here')
  }
  const prefix = asUnit ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', `--inh-caps=${capabilities}`, `--ambient-caps=${capabilities}`, '--'] : []
  const agent = await startMeshdeploy(['start', '--config', config, '--run-installers-as', 'root'], join(root, 'agent.log'), 'agent-started', { command: [...prefix, executable] })
  t.teardown(async () => { await agent.stop() })
  const device = await api.get(`/v1/devices/${agent.event.deviceId as string}`)
  t.like(device, { hostname: 'packaged-pc', site: 'packaged', agentVersion: AGENT_VERSION })
  t.is((await api.get('/v1/enrollment-tokens')).enrollmentTokens.find((entry: any) => entry.lastDeviceId === device.id)?.uses, 1, 'the token names the device it enrolled')
  const agentJson = await stat(join(data, 'agent.json'))
  if (asUnit) t.is(agentJson.uid, 65534, 'the identity belongs to the agent\'s user')
  t.is(agentJson.mode & 0o077, 0)

  const script = join(root, 'install-marker.sh')
  await writeFile(script, '#!/bin/sh\nset -e\nmkdir -p "$MESHDEPLOY_INSTALL_ROOT/srv/marker"\nid -u > "$MESHDEPLOY_INSTALL_ROOT/srv/marker/installed-by"\n')
  const pkg = await api.uploadPackage(script, { name: 'marker', version: '1' })
  t.is(pkg.kind, 'shell')
  const task = await api.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { deviceIds: [device.id] }, maxAttempts: 1 })
  const [row] = await waitFor(async () => {
    const { devices } = await api.get(`/v1/tasks/${task.id as string}/devices`)
    return devices.length === 1 && ['succeeded', 'failed'].includes(devices[0].state) ? devices : undefined
  }, 'the install task to end', 90_000, 250)
  t.is(row.state, 'succeeded', row.message)
  t.is((await readFile(join(root, 'srv/marker/installed-by'), 'utf8')).trim(), '0', 'the installer ran as root')
  if (asUnit) {
    const status = await readFile(`/proc/${agent.child.pid!}/status`, 'utf8').catch(() => '')
    // setpriv exec'd the agent: the process is the agent itself, running as the unprivileged user.
    t.regex(status, /^Uid:\s+65534\s/m, 'the agent itself is not root')
  }
})

packageTest(titled('installed with dpkg under a private root: the user, config and data folder are made; a reinstall keeps the identity and the edited config; remove keeps them; purge removes them'), async t => {
  const built = await packagesOrFail(t)
  if (built === undefined) return
  const root = await tempFolder(t, 'md-dpkg-root-')
  for (const folder of ['var/lib/dpkg/info', 'var/lib/dpkg/updates', 'var/lib/dpkg/triggers', 'var/lib/dpkg/alternatives', 'etc']) await mkdir(join(root, folder), { recursive: true })
  for (const file of ['var/lib/dpkg/status', 'var/lib/dpkg/available']) await writeFile(join(root, file), '')
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n')
  await writeFile(join(root, 'etc/group'), 'root:x:0:\n')
  await writeFile(join(root, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o600 })
  await writeFile(join(root, 'etc/gshadow'), 'root:*::\n', { mode: 0o600 })
  const dpkg = async (...args: string[]): Promise<string> => (await run('dpkg', [`--root=${root}`, '--force-script-chrootless', '--force-depends', '--log=/dev/null', ...args], { maxBuffer: 4 * 1024 * 1024 })).stdout

  await dpkg('--install', built.deb)
  const passwd = await readFile(join(root, 'etc/passwd'), 'utf8')
  const account = /^meshdeploy-agent:x:(\d+):(\d+):/m.exec(passwd)
  t.truthy(account, 'the agent\'s system user exists')
  const [uid, gid] = [Number(account![1]), Number(account![2])]
  t.regex(passwd, /^meshdeploy-agent:x:\d+:\d+:meshdeploy agent:\/var\/lib\/meshdeploy-agent:\/usr\/sbin\/nologin$/m)
  const config = join(root, 'etc/meshdeploy/agent.yaml')
  const configStat = await stat(config)
  t.is(configStat.mode & 0o777, 0o640)
  t.deepEqual([configStat.uid, configStat.gid], [0, gid], 'root\'s file, readable by the agent\'s group')
  const data = await stat(join(root, 'var/lib/meshdeploy-agent'))
  t.deepEqual([data.uid, data.gid, data.mode & 0o777], [uid, gid, 0o750])
  t.is(await readFile(config, 'utf8'), await readFile(join(root, 'opt/meshdeploy-agent/share/agent.yaml'), 'utf8'), 'the config starts as the template')

  // The agent enrolled and the operator set it up; an upgrade (here: the same package again) keeps both.
  const identity = join(root, 'var/lib/meshdeploy-agent/agent.json')
  await writeFile(identity, '{"deviceId":"dev-kept"}\n', { mode: 0o600 })
  await writeFile(config, 'coordinator: https://deploy.example.org:8650\nsite: berlin\n')
  await dpkg('--install', built.deb)
  t.is(await readFile(identity, 'utf8'), '{"deviceId":"dev-kept"}\n')
  t.is(await readFile(config, 'utf8'), 'coordinator: https://deploy.example.org:8650\nsite: berlin\n')
  t.is((await readFile(join(root, 'etc/passwd'), 'utf8')).match(/^meshdeploy-agent:/gm)?.length, 1, 'the user is made once')

  await dpkg('--remove', 'meshdeploy-agent')
  await t.throwsAsync(lstat(join(root, 'opt/meshdeploy-agent/bin/meshdeploy-agent')), undefined, 'removed: the program is gone')
  t.is(await readFile(identity, 'utf8'), '{"deviceId":"dev-kept"}\n', 'removed: the identity stays')
  t.true((await stat(config)).isFile(), 'removed: the config stays')

  await dpkg('--purge', 'meshdeploy-agent')
  await t.throwsAsync(stat(identity), { code: 'ENOENT' }, 'purged: the identity is gone')
  await t.throwsAsync(stat(config), { code: 'ENOENT' }, 'purged: the config is gone')
  await t.throwsAsync(stat(join(root, 'var/lib/meshdeploy-agent')), { code: 'ENOENT' })
  t.regex(await readFile(join(root, 'etc/passwd'), 'utf8'), /^meshdeploy-agent:/m, 'purged: the system user stays, as Debian keeps system users')
})
