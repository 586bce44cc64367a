import test from 'ava'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { buildDeb, dpkgStatus, openAgentLab } from '../helpers/agent-lab.js'
import { waitFor } from '../helpers/processes.js'

/** A shell package that appends its name to the install root's order.log and leaves its detection file. */
function script (name: string, exitCode = 0): string {
  return `#!/bin/sh\nset -e\necho ${name} >> "$MESHDEPLOY_INSTALL_ROOT/order.log"\n` +
    (exitCode === 0 ? `mkdir -p "$MESHDEPLOY_INSTALL_ROOT/opt/${name}" && touch "$MESHDEPLOY_INSTALL_ROOT/opt/${name}/installed"\n` : `echo "${name} cannot install here" >&2\nexit ${exitCode}\n`)
}

const detect = (name: string): Record<string, unknown> => ({ detection: { type: 'file', path: `/opt/${name}/installed` } })

test.serial('content downloads outside the maintenance window; the install starts only once a window long enough opens (device clock)', async t => {
  let offsetMs = 0
  const lab = await openAgentLab({ agent: { now: () => Date.now() + offsetMs, timeZone: 'UTC' } })
  try {
    const deviceId = lab.agent.identity.deviceId
    const tomorrow = new Date(Date.now() + 24 * 3600_000).toISOString().slice(0, 10)
    const window = await lab.api.post('/v1/maintenance-windows', { name: 'lab night', deviceIds: [deviceId], date: tomorrow, start: '22:00', durationMinutes: 120, timeZone: 'UTC' })
    await waitFor(async () => lab.agent.windows.windows.length === 1 ? true : undefined, 'the agent to receive its window', 20_000, 20)
    const pkg = await lab.upload('tool.sh', script('tool') + `: ${'x'.repeat(300_000)}\n`, { name: 'tool', version: '1.0', ...detect('tool') })
    const task = await lab.task({ packageId: pkg.id, action: 'install', targets: { all: true }, timeoutSeconds: 600, maxAttempts: 1 })
    t.is(task.maintenanceWindows, 'respect', 'installs respect windows by default')
    const waiting = await lab.waitRow(task.id, row => row.state === 'waiting-for-window', 'the device to wait for its window')
    t.is(waiting.bytesDone, pkg.sizeBytes, 'the content is downloaded before the window')
    t.is(new Date(waiting.windowAt).toISOString(), `${tomorrow}T22:00:00.000Z`)
    t.regex(waiting.message, /waiting for the maintenance window that opens at/)

    // The window moves to the next minute on the device clock, which is set 1.5 s before it.
    const next = new Date(Math.ceil((Date.now() + 2000) / 60_000) * 60_000)
    offsetMs = next.getTime() - 1500 - Date.now()
    await lab.api.patch(`/v1/maintenance-windows/${window.id}`, { date: next.toISOString().slice(0, 10), start: next.toISOString().slice(11, 16), durationMinutes: 15 })
    const done = await lab.waitRow(task.id)
    t.is(done.state, 'succeeded')
    const history = (await lab.api.get(`/v1/tasks/${task.id}/devices/${deviceId}/history`)).records as any[]
    const installing = history.find(record => record.state === 'installing')
    t.true(installing.at >= next.getTime(), `the install started at ${new Date(installing.at).toISOString()}, inside the window from ${next.toISOString()}`)
    t.true(history.filter(record => record.state === 'downloading').every(record => record.at < next.getTime()), 'downloaded before the window opened')
    t.is(await readFile(join(lab.installRoot, 'order.log'), 'utf8'), 'tool\n')
  } finally {
    await lab.close()
  }
})

test.serial('dependencies: A → B → C install in order where missing; a failed dependency fails the task with its reason', async t => {
  const lab = await openAgentLab()
  try {
    const c = await lab.upload('c.sh', script('c'), { name: 'c', version: '1.0', ...detect('c') })
    const b = await lab.upload('b.sh', script('b'), { name: 'b', version: '2.0', ...detect('b'), dependsOn: [{ packageId: c.id }] })
    const a = await lab.upload('a.sh', script('a'), { name: 'a', version: '3.0', ...detect('a'), dependsOn: [{ name: 'b', minVersion: '2' }] })
    const task = await lab.task({ packageId: a.id, action: 'install', targets: { all: true }, maxAttempts: 1 })
    const row = await lab.waitRow(task.id)
    t.is(row.state, 'succeeded')
    t.regex(row.message, /dependency c 1\.0 installed; dependency b 2\.0 installed/)
    t.is(row.bytesTotal, a.sizeBytes + b.sizeBytes + c.sizeBytes, 'every package of the chain downloaded')
    t.is(await readFile(join(lab.installRoot, 'order.log'), 'utf8'), 'c\nb\na\n')

    // A dependency already there (by its detection rule) is not installed again.
    const d = await lab.upload('d.sh', script('d'), { name: 'd', version: '1.0', ...detect('d'), dependsOn: [{ packageId: c.id }] })
    t.is((await lab.waitRow((await lab.task({ packageId: d.id, action: 'install', targets: { all: true }, maxAttempts: 1 })).id)).state, 'succeeded')
    t.is(await readFile(join(lab.installRoot, 'order.log'), 'utf8'), 'c\nb\na\nd\n')

    const broken = await lab.upload('f.sh', script('f', 3), { name: 'f', version: '1.0', ...detect('f') })
    const e = await lab.upload('e.sh', script('e'), { name: 'e', version: '1.0', ...detect('e'), dependsOn: [{ packageId: broken.id }] })
    const failed = await lab.waitRow((await lab.task({ packageId: e.id, action: 'install', targets: { all: true }, maxAttempts: 1 })).id)
    t.is(failed.state, 'failed')
    t.is(failed.exitCode, 3)
    t.regex(failed.message, /the dependency f 1\.0 failed: .*exited with 3/)
    t.regex(failed.message, /f cannot install here/)
    t.is(await readFile(join(lab.installRoot, 'order.log'), 'utf8'), 'c\nb\na\nd\nf\n', 'e never ran')
  } finally {
    await lab.close()
  }
})

test.serial('supersedence with real debs in a private dpkg root: upgrade installs over the old version, replace removes the old package first', async t => {
  const lab = await openAgentLab()
  try {
    const deb = async (name: string, version: string): Promise<any> => await lab.upload(`${name}_${version}.deb`, await readFile(await buildDeb(lab.folder, name, version, { [`opt/${name}/${version}.txt`]: `${name} ${version}\n` })), {
      name, version, detection: { type: 'linux-package', manager: 'dpkg', name, version }, uninstall: { type: 'linux-package', manager: 'dpkg', name }
    })
    const v1 = await deb('md-tool', '1.0')
    const legacy = await deb('md-legacy', '4.2')
    for (const pkg of [v1, legacy]) t.is((await lab.waitRow((await lab.task({ packageId: pkg.id, action: 'install', targets: { all: true }, maxAttempts: 1 })).id)).state, 'succeeded')
    t.is(await dpkgStatus(lab.installRoot, 'md-tool'), 'install ok installed 1.0')

    const v2 = await lab.upload('md-tool_2.0.deb', await readFile(await buildDeb(lab.folder, 'md-tool', '2.0', { 'opt/md-tool/2.0.txt': 'md-tool 2.0\n' })), {
      name: 'md-tool', version: '2.0', detection: { type: 'linux-package', manager: 'dpkg', name: 'md-tool', version: '2.0' }, supersedes: [{ packageId: v1.id, mode: 'upgrade' }]
    })
    const upgraded = await lab.waitRow((await lab.task({ packageId: v2.id, action: 'install', targets: { all: true }, maxAttempts: 1 })).id)
    t.is(upgraded.state, 'succeeded')
    t.regex(upgraded.message, /upgrading md-tool 1\.0/)
    t.is(await dpkgStatus(lab.installRoot, 'md-tool'), 'install ok installed 2.0')

    const successor = await lab.upload('md-successor_1.0.deb', await readFile(await buildDeb(lab.folder, 'md-successor', '1.0', { 'opt/md-successor/1.0.txt': 'successor\n' })), {
      name: 'md-successor', version: '1.0', detection: { type: 'linux-package', manager: 'dpkg', name: 'md-successor', version: '1.0' }, supersedes: [{ packageId: legacy.id, mode: 'replace' }]
    })
    const replaced = await lab.waitRow((await lab.task({ packageId: successor.id, action: 'install', targets: { all: true }, maxAttempts: 1 })).id)
    t.is(replaced.state, 'succeeded')
    t.regex(replaced.message, /replaced md-legacy 4\.2/)
    t.not(await dpkgStatus(lab.installRoot, 'md-legacy'), 'install ok installed 4.2')
    t.is(await dpkgStatus(lab.installRoot, 'md-successor'), 'install ok installed 1.0')
  } finally {
    await lab.close()
  }
})

test.serial('a reboot the policy asks for waits for a maintenance window, and happens once one opens', async t => {
  const now = Date.now()
  const minute = Math.floor(now / 60_000) * 60_000 + 60_000
  // The device clock stands 5 s into a minute, so that a window opening at that minute is open.
  let offsetMs = minute + 5000 - now
  const log = join('/tmp', `md-window-reboot-${process.pid}-${now}.log`)
  const lab = await openAgentLab({ agent: { now: () => Date.now() + offsetMs, timeZone: 'UTC', rebootCommand: ['/bin/sh', '-c', `echo "$MESHDEPLOY_REBOOT_DELAY_SECONDS" >> ${log}`], bootId: async () => 'boot-1' } })
  const at = (ms: number): { date: string, start: string } => ({ date: new Date(ms).toISOString().slice(0, 10), start: new Date(ms).toISOString().slice(11, 16) })
  try {
    const deviceId = lab.agent.identity.deviceId
    const window = await lab.api.post('/v1/maintenance-windows', { name: 'now', deviceIds: [deviceId], ...at(minute), durationMinutes: 2, timeZone: 'UTC' })
    await waitFor(async () => lab.agent.windows.windows.length === 1 ? true : undefined, 'the agent to receive its window', 20_000, 20)
    const pkg = await lab.upload('slow.sh', '#!/bin/sh\nsleep 3\nmkdir -p "$MESHDEPLOY_INSTALL_ROOT/opt/slow" && touch "$MESHDEPLOY_INSTALL_ROOT/opt/slow/installed"\n', { name: 'slow', version: '1', ...detect('slow') })
    const task = await lab.task({ packageId: pkg.id, action: 'install', targets: { all: true }, timeoutSeconds: 30, maxAttempts: 1, reboot: { policy: 'prompt', deadlineSeconds: 600 } })
    await lab.waitRow(task.id, row => row.state === 'installing', 'the install to start inside the window')
    // While the installer runs, the window moves to tomorrow: the install finishes outside any window.
    const tomorrow = minute + 24 * 3600_000
    await lab.api.patch(`/v1/maintenance-windows/${window.id}`, at(tomorrow))
    const pending = await lab.waitRow(task.id)
    t.is(pending.state, 'succeeded-reboot-pending')
    t.regex(pending.message, /the reboot waits for the maintenance window at/)
    t.is(pending.windowAt, tomorrow)
    await t.throwsAsync(readFile(log, 'utf8'), undefined, 'no reboot outside the window')

    // The window opens on the device clock: the reboot happens, its prompt deadline cut to end inside the window.
    offsetMs += 60_000
    await lab.api.patch(`/v1/maintenance-windows/${window.id}`, { ...at(Date.now() + offsetMs), durationMinutes: 5 })
    const rebooted = await lab.waitRow(task.id, row => /a maintenance window is open: reboot at/.test(row.message ?? ''), 'the reboot in the window')
    t.is(rebooted.state, 'succeeded-reboot-pending')
    const delays = (await readFile(log, 'utf8')).trim().split('\n').map(Number)
    t.is(delays.length, 1)
    t.true(delays[0] > 0 && delays[0] <= 5 * 60 - 60, `the user's deadline (${delays[0]} s) ends inside the window`)
  } finally {
    await lab.close()
    await rm(log, { force: true })
  }
})
