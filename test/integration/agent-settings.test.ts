import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { create as createTar } from 'tar'
import { generateKeyPair, signPackageHash, toHex } from '../../protocol/index.js'
import { buildDeb, dpkgStatus, openAgentLab, type AgentLab } from '../helpers/agent-lab.js'
import { waitFor } from '../helpers/processes.js'

const sha256 = (text: string | Buffer): string => createHash('sha256').update(text).digest('hex')
/** A shell script that writes `content` to PATH under the install root and exits with `exitCode`. */
const writer = (path: string, content: string, exitCode = 0): string =>
  `#!/bin/sh\nset -e\nmkdir -p "$MESHDEPLOY_INSTALL_ROOT/$(dirname ${path})"\nprintf '%s' '${content}' > "$MESHDEPLOY_INSTALL_ROOT/${path}"\nexit ${exitCode}\n`

async function history (lab: AgentLab, taskId: string): Promise<string[]> {
  return (await lab.api.get(`/v1/tasks/${taskId}/devices/${lab.agent.identity.deviceId}/history`)).records.map((record: any) => record.state)
}

test.serial('every detection rule kind is checked before (already installed: nothing downloaded) and after the install', async t => {
  const lab = await openAgentLab()
  try {
    await mkdir(join(lab.installRoot, 'opt/present'), { recursive: true })
    await writeFile(join(lab.installRoot, 'opt/present/VERSION'), '1.0')
    const present = await lab.upload('present.sh', writer('opt/present/VERSION', '2.0'), { name: 'present', version: '1', detection: { type: 'file', path: '/opt/present/VERSION' } })
    const hashed = await lab.upload('hashed.sh', writer('opt/hashed/VERSION', 'v2'), { name: 'hashed', version: '1', detection: { type: 'file', path: '/opt/hashed/VERSION', sha256: sha256('v2') } })
    const command = await lab.upload('command.sh', writer('opt/command/ok', 'yes'), { name: 'command', version: '1', detection: { type: 'command', command: ['/bin/sh', '-c', 'test -f "$MESHDEPLOY_INSTALL_ROOT/opt/command/ok"'] } })
    const lying = await lab.upload('lying.sh', '#!/bin/sh\nexit 0\n', { name: 'lying', version: '1', detection: { type: 'file', path: '/opt/lying/never' } })
    const blind = await lab.upload('blind.sh', writer('opt/blind/x', 'x'), { name: 'blind', version: '1' })
    const tasks = await Promise.all([present, hashed, command, lying, blind].map(async pkg => await lab.task({ packageId: pkg.id, action: 'install', targets: { all: true }, maxAttempts: 1 })))
    const [rowPresent, rowHashed, rowCommand, rowLying, rowBlind] = await Promise.all(tasks.map(async task => await lab.waitRow(task.id)))
    t.like(rowPresent, { state: 'already-installed', bytesFromOrigin: 0, message: '/opt/present/VERSION exists' })
    t.is(await readFile(join(lab.installRoot, 'opt/present/VERSION'), 'utf8'), '1.0', 'the installer did not run')
    t.like(rowHashed, { state: 'succeeded', exitCode: 0 })
    t.regex(rowHashed.message, /exists with the expected SHA-256/)
    t.like(rowCommand, { state: 'succeeded' })
    t.regex(rowCommand.message, /\/bin\/sh exited 0/)
    t.like(rowLying, { state: 'failed', final: true })
    t.regex(rowLying.message, /DetectionFailedError: the installer exited with 0, but the detection rule does not hold: \/opt\/lying\/never does not exist/)
    t.like(rowBlind, { state: 'succeeded' })
    t.regex(rowBlind.message, /install state unknown: the package has no detection rule/)
  } finally {
    await lab.close()
  }
})

test.serial('a deb installs for real into a private dpkg root, is detected by package name and version, and uninstalls without content', async t => {
  const lab = await openAgentLab()
  try {
    const deb = await buildDeb(lab.folder, 'md-hello', '1.2-1', { 'opt/md-hello/hello.txt': 'hello\n' })
    const pkg = await lab.upload('md-hello.deb', await readFile(deb), {
      name: 'md-hello', version: '1.2-1',
      detection: { type: 'linux-package', manager: 'dpkg', name: 'md-hello', version: '1.2-1' },
      uninstall: { type: 'linux-package', manager: 'dpkg', name: 'md-hello' }
    })
    t.like(pkg, { kind: 'deb', platform: 'linux' })
    const install = await lab.task({ packageId: pkg.id, action: 'install', targets: { all: true }, maxAttempts: 1 })
    const installed = await lab.waitRow(install.id)
    t.like(installed, { state: 'succeeded', exitCode: 0, bytesFromOrigin: pkg.sizeBytes })
    t.regex(installed.message, /md-hello 1\.2-1 is installed \(dpkg\)/)
    t.is(await readFile(join(lab.installRoot, 'opt/md-hello/hello.txt'), 'utf8'), 'hello\n')
    t.is(await dpkgStatus(lab.installRoot, 'md-hello'), 'install ok installed 1.2-1')
    const again = await lab.task({ packageId: pkg.id, action: 'install', targets: { all: true } })
    t.like(await lab.waitRow(again.id), { state: 'already-installed', bytesFromOrigin: 0 })
    const removal = await lab.task({ packageId: pkg.id, action: 'uninstall', targets: { all: true }, maxAttempts: 1 })
    const removed = await lab.waitRow(removal.id)
    t.like(removed, { state: 'succeeded', exitCode: 0, bytesTotal: 0, bytesFromOrigin: 0 })
    t.regex(removed.message, /the uninstaller exited with 0; md-hello is not installed/)
    await t.throwsAsync(stat(join(lab.installRoot, 'opt/md-hello/hello.txt')))
    t.not(await dpkgStatus(lab.installRoot, 'md-hello'), 'install ok installed 1.2-1')
    const removeAgain = await lab.task({ packageId: pkg.id, action: 'uninstall', targets: { all: true } })
    t.regex((await lab.waitRow(removeAgain.id)).message, /not installed; nothing to remove/)
  } finally {
    await lab.close()
  }
})

test.serial('exit codes map through the package mapping; reboot policies never, always and prompt run the reboot command as they say', async t => {
  const lab0 = join('/tmp', `md-reboot-${randomBytes(4).toString('hex')}`)
  const hook = `${lab0}.sh`
  const log = `${lab0}.log`
  await writeFile(hook, `#!/bin/sh\necho "$MESHDEPLOY_REBOOT_DELAY_SECONDS|$MESHDEPLOY_REBOOT_MESSAGE|$MESHDEPLOY_REBOOT_FORCE_CLOSE_APPS" >> ${log}\n`, { mode: 0o755 })
  const lab = await openAgentLab({ agent: { rebootCommand: [hook], retrySoonMs: 500, bootId: async () => 'boot-1' } })
  try {
    // POSIX exit codes stop at 255, so the Windows codes 3010 and 1618 are mapped from small ones here, as a package would.
    const needsReboot = await lab.upload('needs-reboot.sh', writer('opt/a/x', 'a', 30), { name: 'needs-reboot', version: '1', exitCodes: { 30: 'success-reboot-required' } })
    const mapped = await lab.upload('mapped.sh', writer('opt/b/x', 'b', 7), { name: 'mapped', version: '1', exitCodes: { 7: 'success' } })
    const busyOnce = await lab.upload('busy-once.sh', '#!/bin/sh\nf="$MESHDEPLOY_INSTALL_ROOT/busy-once"\nif [ -f "$f" ]; then exit 0; fi\ntouch "$f"\nexit 18\n', { name: 'busy-once', version: '1', exitCodes: { 18: 'retry' } })
    const always = await lab.upload('always.sh', writer('opt/c/x', 'c'), { name: 'always', version: '1' })
    const prompt = await lab.upload('prompt.sh', writer('opt/d/x', 'd'), { name: 'prompt', version: '1' })
    const failing = await lab.upload('failing.sh', '#!/bin/sh\necho "disk full" >&2\nexit 103\n', { name: 'failing', version: '1' })
    const tNever = await lab.task({ packageId: needsReboot.id, action: 'install', targets: { all: true }, reboot: { policy: 'never' } })
    const tMapped = await lab.task({ packageId: mapped.id, action: 'install', targets: { all: true } })
    const tBusy = await lab.task({ packageId: busyOnce.id, action: 'install', targets: { all: true }, maxAttempts: 1 })
    const tFailing = await lab.task({ packageId: failing.id, action: 'install', targets: { all: true }, maxAttempts: 1 })
    const never = await lab.waitRow(tNever.id)
    t.like(never, { state: 'succeeded-reboot-pending', exitCode: 30 })
    t.regex(never.message, /needs a reboot; the reboot policy is never/)
    t.like(await lab.waitRow(tMapped.id), { state: 'succeeded', exitCode: 7 })
    const busy = await lab.waitRow(tBusy.id)
    t.like(busy, { state: 'succeeded', attempt: 1 }, '1618 retries soon without using up the single attempt')
    t.deepEqual((await history(lab, tBusy.id)).filter(state => state === 'failed').length, 1)
    const failed = await lab.waitRow(tFailing.id)
    t.like(failed, { state: 'failed', exitCode: 103, final: true })
    t.regex(failed.message, /the installer exited with 103; attempt 1 of 1; no attempts left; output: disk full/)
    await t.throwsAsync(readFile(log, 'utf8'), undefined, 'no reboot so far')
    const tAlways = await lab.task({ packageId: always.id, action: 'install', targets: { all: true }, reboot: { policy: 'always', message: 'restarting now' } })
    const rebooted = await lab.waitRow(tAlways.id)
    t.is(rebooted.state, 'succeeded-reboot-pending')
    t.regex(rebooted.message, /the reboot policy is always: restarting now; reboot at .*"restarting now"/)
    const tPrompt = await lab.task({ packageId: prompt.id, action: 'install', targets: { all: true }, reboot: { policy: 'prompt', message: 'save your work', deadlineSeconds: 600, forceCloseApps: true } })
    const prompted = await lab.waitRow(tPrompt.id)
    t.regex(prompted.message, /the user was asked to restart; the restart is forced in 600 s; .*closing blocking applications/)
    t.deepEqual((await readFile(log, 'utf8')).trim().split('\n'), ['0|restarting now|0', '600|save your work|1'])
    // The device comes back from its reboot: the pending reboots are done; the one the policy left to the user is not.
    await lab.restartAgent({ bootId: async () => 'boot-2' })
    for (const task of [tAlways, tPrompt]) {
      t.like(await lab.waitRow(task.id, row => row.state === 'succeeded', 'the reboot to be confirmed'), { message: 'the device has restarted since the install: the reboot is done' })
    }
    t.like(await lab.waitRow(tNever.id, row => row.state === 'succeeded', 'the user\'s reboot to be confirmed'), { exitCode: 30 })
  } finally {
    await lab.close()
    await Promise.all([hook, log].map(async file => { await rm(file, { force: true }) }))
  }
})

test.serial('a package for another platform is refused as not-applicable without downloading it', async t => {
  const lab = await openAgentLab()
  try {
    const msi = Buffer.concat([Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]), randomBytes(200_000)])
    const pkg = await lab.upload('setup.msi', msi, { name: 'WinTool', version: '1', uninstall: { type: 'msi', productCode: '{23170F69-40C1-2702-2301-000001000000}' } })
    t.like(pkg, { kind: 'msi', platform: 'windows' })
    const install = await lab.task({ packageId: pkg.id, action: 'install', targets: { all: true } })
    const removal = await lab.task({ packageId: pkg.id, action: 'uninstall', targets: { all: true } })
    for (const task of [install, removal]) {
      const row = await lab.waitRow(task.id)
      t.like(row, { state: 'not-applicable', bytesFromOrigin: 0 })
      t.regex(row.message, /WinTool is a windows package; this device runs linux/)
    }
  } finally {
    await lab.close()
  }
})

test.serial('attempts: each failed run counts, with the next retry time, until the limit; a re-run for failed devices starts the count again', async t => {
  const lab = await openAgentLab()
  try {
    const pkg = await lab.upload('needs-fix.sh', '#!/bin/sh\nif [ ! -f "$MESHDEPLOY_INSTALL_ROOT/fixed" ]; then echo "prerequisite missing" >&2; exit 2; fi\n', { name: 'needs-fix', version: '1' })
    const task = await lab.task({ packageId: pkg.id, action: 'install', targets: { all: true }, maxAttempts: 2, retryDelaySeconds: 1 })
    const first = await lab.waitRow(task.id, row => row.state === 'failed', 'the first failure')
    t.like(first, { attempt: 1, exitCode: 2 })
    t.regex(first.message, /attempt 1 of 2; next try at \d{4}-\d\d-\d\dT/)
    t.true(first.retryAt > Date.now() - 5000)
    const last = await lab.waitRow(task.id, row => row.state === 'failed' && row.final === true, 'the final failure')
    t.like(last, { attempt: 2 })
    t.regex(last.message, /attempt 2 of 2; no attempts left; output: prerequisite missing/)
    // Raising the limit gives one more attempt: the counter keeps its two failures (Kaspersky).
    await lab.api.post(`/v1/tasks/${task.id}/pause`)
    await lab.api.patch(`/v1/tasks/${task.id}`, { maxAttempts: 3 })
    await lab.api.post(`/v1/tasks/${task.id}/resume`)
    const third = await lab.waitRow(task.id, row => row.state === 'failed' && row.final === true && row.revision === 2, 'the third attempt')
    t.like(third, { attempt: 3 })
    t.regex(third.message, /attempt 3 of 3; no attempts left/)
    await writeFile(join(lab.installRoot, 'fixed'), '')
    const rerun = await lab.api.post(`/v1/tasks/${task.id}/rerun`)
    t.is(rerun.rerunDevices, 1)
    const fixed = await lab.waitRow(task.id, row => row.state === 'succeeded', 'the re-run')
    t.like(fixed, { attempt: 1, revision: 3 })
  } finally {
    await lab.close()
  }
})

test.serial('VPN deferral: a task set to wait shows deferred-vpn while a VPN interface is up and runs once it drops (fake interface list)', async t => {
  let interfaces = ['lo', 'eth0', 'tun0']
  const lab = await openAgentLab({ agent: { listInterfaces: () => interfaces, vpnCheckIntervalMs: 50 } })
  try {
    const waits = await lab.upload('waits.sh', writer('opt/waits/x', 'x'), { name: 'waits', version: '1' })
    const ignores = await lab.upload('ignores.sh', writer('opt/ignores/x', 'x'), { name: 'ignores', version: '1' })
    const deferred = await lab.task({ packageId: waits.id, action: 'install', targets: { all: true }, deferWhileVpn: true })
    const regardless = await lab.task({ packageId: ignores.id, action: 'install', targets: { all: true } })
    const row = await lab.waitRow(deferred.id, current => current.state === 'deferred-vpn', 'the deferral')
    t.regex(row.message, /a VPN is connected \(tun0\); waiting for it to disconnect/)
    t.like(await lab.waitRow(regardless.id), { state: 'succeeded' }, 'a task without the setting runs over the VPN')
    // Paused while deferred: the agent lets go quietly, without reporting a cancellation.
    const letGo = new Promise<string>(resolve => {
      const ended = (taskId: string, state: string): void => {
        if (taskId !== deferred.id) return
        lab.agent.off('state', ended)
        resolve(state)
      }
      lab.agent.on('state', ended)
    })
    await lab.api.post(`/v1/tasks/${deferred.id}/pause`)
    t.like(await lab.row(deferred.id), { state: 'queued' })
    t.is(await letGo, 'deferred-vpn', 'the agent let go of the waiting attempt without running it')
    // The VPN drops while the task is paused: nothing starts until it is resumed.
    interfaces = ['lo', 'eth0']
    const resumedAt = Date.now()
    await lab.api.post(`/v1/tasks/${deferred.id}/resume`)
    t.like(await lab.waitRow(deferred.id), { state: 'succeeded' })
    const records = (await lab.api.get(`/v1/tasks/${deferred.id}/devices/${lab.agent.identity.deviceId}/history`)).records as Array<{ state: string, at: number | string }>
    const ran = records.filter(record => record.state !== 'queued' && record.state !== 'deferred-vpn')
    t.true(ran.length > 0)
    t.true(ran.every(record => new Date(record.at).getTime() >= resumedAt), 'nothing ran while paused')
    t.false(records.some(record => record.state === 'cancelled'))
  } finally {
    await lab.close()
  }
})

test.serial('pause and delete let a running download finish; cancel stops it; expiry ends a waiting device as expired', async t => {
  let offsetMs = 0
  const now = (): number => Date.now() + offsetMs
  const lab = await openAgentLab({ now, agent: { listInterfaces: () => ['eth0', 'wg0'], vpnCheckIntervalMs: 50 } })
  try {
    const slow = async (name: string): Promise<any> => await lab.upload(`${name}.bin`, randomBytes(300_000), { name, version: '1' })
    const [paused, deleted, cancelled, waiting] = await Promise.all(['paused', 'deleted', 'cancelled', 'waiting'].map(slow))
    const tasks = await Promise.all([paused, deleted, cancelled].map(async pkg => await lab.task({ packageId: pkg.id, action: 'distribute-files', destination: `/srv/${pkg.name as string}`, targets: { all: true }, bandwidthKBps: 60 })))
    const expiring = await lab.task({ packageId: waiting.id, action: 'distribute-files', destination: '/srv/waiting', targets: { all: true }, deferWhileVpn: true, validForSeconds: 3600 })
    await Promise.all(tasks.map(async task => await lab.waitRow(task.id, row => row.state === 'downloading' && row.bytesDone > 0, 'the download to start')))
    await lab.api.post(`/v1/tasks/${tasks[0].id}/pause`)
    await lab.api.delete(`/v1/tasks/${tasks[1].id}`)
    await lab.api.post(`/v1/tasks/${tasks[2].id}/cancel`)
    await lab.waitRow(expiring.id, row => row.state === 'deferred-vpn', 'the deferral')
    t.like(await lab.waitRow(tasks[2].id, row => row.message === 'the task was withdrawn', 'the agent to report the cancellation'), { state: 'cancelled' })
    t.like(await lab.waitRow(tasks[0].id), { state: 'succeeded' }, 'paused while downloading: it finishes')
    t.is((await stat(join(lab.installRoot, 'srv/paused/paused.bin'))).size, 300_000)
    const deletedFile = await waitFor(async () => await stat(join(lab.installRoot, 'srv/deleted/deleted.bin')).catch(() => undefined), 'the deleted task\'s file')
    t.is(deletedFile.size, 300_000, 'deleted while downloading: it finishes')
    await t.throwsAsync(stat(join(lab.installRoot, 'srv/cancelled/cancelled.bin')))
    offsetMs = 3601_000
    await lab.coordinator.services.scheduler.tick()
    const expired = await lab.waitRow(expiring.id, row => row.state === 'expired', 'the expiry')
    await waitFor(async () => (await history(lab, expiring.id)).includes('expired') ? true : undefined, 'the agent to report the expiry itself')
    t.regex(expired.message, /validity ended/)
  } finally {
    await lab.close()
  }
})

test.serial('distribute files with a file mode and an overwrite policy; remove them again with the uninstall spec', async t => {
  const lab = await openAgentLab()
  try {
    const tree = join(lab.folder, 'tree')
    await mkdir(join(tree, 'conf'), { recursive: true })
    await mkdir(join(tree, 'bin'), { recursive: true })
    await writeFile(join(tree, 'conf/app.conf'), 'shipped=1\n')
    await writeFile(join(tree, 'bin/tool'), '#!/bin/sh\n')
    const archive = join(lab.folder, 'bundle.tar.gz')
    await createTar({ gzip: true, file: archive, cwd: tree, portable: true }, ['conf', 'bin'])
    const destination = join(lab.installRoot, 'opt/app')
    await mkdir(join(destination, 'conf'), { recursive: true })
    await writeFile(join(destination, 'conf/app.conf'), 'local=1\n')
    await writeFile(join(destination, 'notes.txt'), 'mine\n')
    const pkg = await lab.upload('bundle.tar.gz', await readFile(archive), { name: 'bundle', version: '1', uninstall: { type: 'distributed-files', destination: '/opt/app' } })
    const refused = await lab.task({ packageId: pkg.id, action: 'distribute-files', destination: '/opt/app', overwrite: 'fail', targets: { all: true }, maxAttempts: 1 })
    const failed = await lab.waitRow(refused.id)
    t.like(failed, { state: 'failed', final: true })
    t.regex(failed.message, /OverwriteRefusedError: 1 file\(s\) already exist and the overwrite policy is fail: conf\/app\.conf/)
    await t.throwsAsync(stat(join(destination, 'bin/tool')), undefined, 'fail writes nothing')
    const kept = await lab.task({ packageId: pkg.id, action: 'distribute-files', destination: '/opt/app', overwrite: 'keep', fileMode: '0640', targets: { all: true } })
    t.regex((await lab.waitRow(kept.id)).message, /extracted 4 entries into \/opt\/app: 1 file\(s\) written, 1 existing kept/)
    t.is(await readFile(join(destination, 'conf/app.conf'), 'utf8'), 'local=1\n')
    t.is((await stat(join(destination, 'bin/tool'))).mode & 0o777, 0o640)
    const replaced = await lab.task({ packageId: pkg.id, action: 'distribute-files', destination: '/opt/app', targets: { all: true } })
    await lab.waitRow(replaced.id)
    t.is(await readFile(join(destination, 'conf/app.conf'), 'utf8'), 'shipped=1\n')
    t.is(await readFile(join(destination, 'notes.txt'), 'utf8'), 'mine\n', 'files the package does not bring stay')
    const removal = await lab.task({ packageId: pkg.id, action: 'uninstall', targets: { all: true } })
    const removed = await lab.waitRow(removal.id)
    t.like(removed, { state: 'succeeded' })
    t.regex(removed.message, /removed 2 distributed file\(s\) from \/opt\/app/)
    await t.throwsAsync(stat(join(destination, 'bin')))
    t.is(await readFile(join(destination, 'notes.txt'), 'utf8'), 'mine\n')
  } finally {
    await lab.close()
  }
})

test.serial('uninstall by command and by paths needs no content; a signed package is checked again by the agent', async t => {
  const lab = await openAgentLab()
  try {
    await mkdir(join(lab.installRoot, 'opt/old'), { recursive: true })
    await writeFile(join(lab.installRoot, 'opt/old/a'), 'a')
    await writeFile(join(lab.installRoot, 'opt/leftover'), 'x')
    const byCommand = await lab.upload('old.sh', writer('opt/old/a', 'a'), {
      name: 'old', version: '1', detection: { type: 'file', path: '/opt/old/a' },
      uninstall: { type: 'command', command: ['/bin/sh', '-c', 'rm -rf "$MESHDEPLOY_INSTALL_ROOT/opt/old"'] }
    })
    const byPaths = await lab.upload('leftover.sh', writer('opt/leftover', 'x'), { name: 'leftover', version: '1', uninstall: { type: 'files', paths: ['/opt/leftover'] } })
    const tasks = await Promise.all([byCommand, byPaths].map(async pkg => await lab.task({ packageId: pkg.id, action: 'uninstall', targets: { all: true } })))
    const [first, second] = await Promise.all(tasks.map(async task => await lab.waitRow(task.id)))
    t.like(first, { state: 'succeeded', bytesFromOrigin: 0 })
    t.regex(first.message, /the uninstaller exited with 0; \/opt\/old\/a does not exist/)
    t.like(second, { state: 'succeeded', bytesFromOrigin: 0, message: 'removed 1 of 1 path(s); install state unknown: the package has no detection rule' })
    await t.throwsAsync(stat(join(lab.installRoot, 'opt/old/a')))
    await t.throwsAsync(stat(join(lab.installRoot, 'opt/leftover')))

    const publisher = generateKeyPair()
    await lab.api.post('/v1/publishers', { name: 'Example Ltd', publicKey: toHex(publisher.publicKey) })
    await lab.api.patch('/v1/settings', { securityVerification: true })
    const content = writer('opt/signed/x', 'signed')
    const signed = await lab.upload('signed.sh', content, { name: 'signed', version: '1', publisherSignature: signPackageHash(sha256(content), publisher) })
    const task = await lab.task({ packageId: signed.id, action: 'install', targets: { all: true } })
    t.like(await lab.waitRow(task.id), { state: 'succeeded' })
    t.true((await history(lab, task.id)).includes('verifying'))
  } finally {
    await lab.close()
  }
})
