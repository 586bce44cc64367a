/**
 * Bad conditions on a device and bad addresses from a site peer: a disk
 * that fills during a download, a cached chunk that rots on disk, a peer
 * that names addresses that fail. Each case asserts what the device reports
 * (or does) and that it loses nothing.
 */
import anyTest, { type TestFn } from 'ava'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cp, mkdir, open, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { loadIdentity } from '../../agent/identity.js'
import { PeerBook } from '../../agent/p2p/peer-book.js'
import { MIB, signStatusRecord, type SignedEnvelope, type StatusRecord } from '../../protocol/index.js'
import { runCli, waitFor } from '../helpers/processes.js'
import { cachedChunks, filesUnder, openAgentLab, startLabAgent, type AgentLab } from './harness.js'

const test = anyTest as TestFn<{ lab: AgentLab }>
const run = promisify(execFile)
const inCi = process.env.CI === 'true'

test.before(async t => {
  t.context.lab = await openAgentLab()
})

test.after.always(async t => {
  await t.context.lab?.close()
})

async function row (lab: AgentLab, taskId: string, deviceId: string): Promise<any> {
  return await lab.coordinator.services.tasks.row(taskId, deviceId)
}

async function history (lab: AgentLab, taskId: string, deviceId: string): Promise<any[]> {
  return await lab.coordinator.services.statuses.history(taskId, deviceId)
}

/** Fills the file system holding `folder` until a write fails for lack of space. */
async function fill (folder: string): Promise<void> {
  const handle = await open(join(folder, 'filler'), 'w')
  try {
    const block = Buffer.alloc(MIB)
    for (;;) await handle.write(block)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error
  } finally {
    await handle.close().catch(() => {})
  }
}

// A small tmpfs stands in for a full disk: mounting it needs root. CI runs as root, so there the case always runs.
const asRootTest = process.getuid?.() === 0 || inCi ? test.serial : test.serial.skip

asRootTest('agent fault case 1: the disk fills during a download → the failure and its reason still reach the coordinator, and the device retries later', async t => {
  const { lab } = t.context
  const disk = join(lab.root, 'small-disk')
  await mkdir(disk, { recursive: true })
  await run('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'meshdeploy-test-disk', disk])
  try {
    const file = join(lab.root, 'big.bin')
    await writeFile(file, randomBytes(4 * MIB))
    const pkg = await lab.api.uploadPackage(file, { name: 'big', version: '1' })
    const agent = await startLabAgent(lab, 'pc-full-disk', { dataDir: join(disk, 'agent') })
    try {
      const deviceId = agent.agent.identity.deviceId
      // Slow enough that the disk can fill while the download runs.
      const task = await lab.api.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { deviceIds: [deviceId] }, bandwidthKBps: 256 })
      await waitFor(async () => { const current = await row(lab, task.id, deviceId); return current?.state === 'downloading' && current.bytesDone > 0 ? true : undefined }, 'the download to start', 60_000, 100)
      await fill(disk)
      const failed = await waitFor(async () => { const current = await row(lab, task.id, deviceId); return current?.state === 'failed' ? current : undefined }, 'the failure to reach the coordinator', 30_000, 100)
      t.regex(failed.message, /full|space/i, failed.message)
      t.true(typeof failed.retryAt === 'number', 'the device says when it tries again')
      t.not(failed.final, true, 'a full disk costs no attempt')
    } finally {
      await rm(join(disk, 'filler'), { force: true })
      await agent.stop()
    }
  } finally {
    await run('umount', [disk]).catch(async () => { await run('umount', ['-l', disk]) })
  }
})

test.serial('agent fault case 2: a cached chunk rotted on disk, found at assembly → dropped and fetched again at once, no attempt counted', async t => {
  const { lab } = t.context
  const file = join(lab.root, 'rot.bin')
  await writeFile(file, Buffer.concat([Buffer.from('#!/bin/sh\necho installed > "$MESHDEPLOY_INSTALL_ROOT/rot"\nexit 0\n'), Buffer.from(`# ${randomBytes(96 * 1024).toString('hex')}\n`)]))
  const pkg = await lab.api.uploadPackage(file, { name: 'rot', version: '1' })
  const first = await startLabAgent(lab, 'pc-rot')
  const deviceId = first.agent.identity.deviceId
  const create = async (): Promise<string> => (await lab.api.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { deviceIds: [deviceId] } })).id
  const settled = async (taskId: string): Promise<any> => await waitFor(async () => {
    const current = await row(lab, taskId, deviceId)
    return current?.state === 'succeeded' || current?.state === 'failed' ? current : undefined
  }, 'the task to end', 60_000, 100)
  try {
    t.is((await settled(await create())).state, 'succeeded')
  } finally {
    await first.stop()
  }
  // Bit rot in the cache while the agent is stopped: it does not check every chunk when it starts.
  const chunk = (await lab.coordinator.services.packages.find(pkg.id))!.chunks[1]
  const folder = join(first.dataDir, 'cache')
  const path = (await readdir(folder, { recursive: true })).find(entry => entry.endsWith(chunk))
  t.truthy(path, 'the chunk is cached')
  const handle = await open(join(folder, path!), 'r+')
  await handle.write(Buffer.from([0x42]), 0, 1, 100)
  await handle.close()
  const second = await startLabAgent(lab, 'pc-rot')
  try {
    const taskId = await create()
    const ended = await settled(taskId)
    t.is(ended.state, 'succeeded', ended.message)
    t.is(ended.attempt, 1)
    t.deepEqual((await history(lab, taskId, deviceId)).filter(record => record.state === 'failed'), [], 'no failed attempt was reported')
  } finally {
    await second.stop()
  }
})

test('agent fault case 3: a site peer listed with addresses that fail, moving between them → each address is backed off on its own, up to half an hour', t => {
  let now = 0
  const book = new PeerBook({ now: () => now, random: () => 0 })
  const honest = '/ip4/10.1.0.7/tcp/8651'
  const poisoned = ['/ip4/10.1.0.66/tcp/22', '/ip4/10.1.0.66/tcp/25']
  const dials = new Map<string, number>()
  // 45 minutes; the peer's listing changes every 30 s (each answer), alternating between two addresses that refuse.
  for (let second = 0; second < 45 * 60; second++) {
    now = second * 1000
    if (second % 30 === 0) book.setListed([{ peerId: 'poisoner', addresses: [poisoned[(second / 30) % 2]] }, { peerId: 'honest', addresses: [honest] }])
    for (const { peer, addresses } of book.due(() => true)) {
      book.dialing(peer)
      for (const address of addresses) dials.set(address, (dials.get(address) ?? 0) + 1)
      if (peer === 'honest') book.connected(peer)
      else book.dialFailed(peer)
    }
  }
  t.is(dials.get(honest), 1, 'the honest peer is dialed at once and stays connected')
  for (const address of poisoned) t.true((dials.get(address) ?? 0) <= 12, `${address} dialed ${dials.get(address) ?? 0} times in 45 minutes`)
  // A failing address is held back whatever the listing says; the peer is due once one of its addresses may be tried.
  book.setListed([{ peerId: 'poisoner', addresses: poisoned }])
  t.deepEqual(book.due(() => true).filter(entry => entry.peer === 'poisoner'), [])
  t.true(book.nextRetryAt()! > now)
})

test.serial('agent fault case 4: a copied agent.json started on a second machine beside the genuine device → the coordinator flags the device, names the addresses, and the operator sees it', async t => {
  const { lab } = t.context
  const original = await startLabAgent(lab, 'pc-original')
  const deviceId = original.agent.identity.deviceId
  const device = async (): Promise<any> => await lab.coordinator.services.devices.get(deviceId)
  let copy
  let genuine = original
  try {
    // Alone, the device runs a whole task and its sessions raise nothing.
    const task = await lab.api.post('/v1/tasks', { packageId: lab.packageId, action: 'install', targets: { deviceIds: [deviceId] } })
    await waitFor(async () => (await row(lab, task.id, deviceId))?.state === 'succeeded' ? true : undefined, 'the task to succeed', 60_000, 100)
    t.is((await device()).sharedCredential, undefined, 'one agent alone is not flagged')
    // The copy: agent.json, keys and state as they were, on another machine.
    await original.stop()
    const copiedDir = join(lab.root, 'agents', 'pc-original-copy')
    await cp(original.dataDir, copiedDir, { recursive: true })
    genuine = await startLabAgent(lab, 'pc-original')
    copy = await startLabAgent(lab, 'pc-original-copy', { dataDir: copiedDir })
    t.is(copy.agent.identity.deviceId, deviceId, 'the copy runs as the same device')
    const flagged = await waitFor(async () => (await device()).sharedCredential, 'the device to be flagged', 30_000, 100)
    t.is(flagged.sessions, 2)
    t.deepEqual(flagged.addresses.map((address: string) => address.replace(/^::ffff:/, '')), ['127.0.0.1'])
    t.is(flagged.detectedAt, flagged.lastDetectedAt)
    const shown = await runCli(['device', 'show', deviceId], { MESHDEPLOY_URL: lab.coordinator.url, MESHDEPLOY_TOKEN: lab.coordinator.services.bootstrapAdminToken! })
    t.regex(shown.stdout, /WARNING: this device's credential is used by 2 agents at once/)
    const listed = await runCli(['device', 'list'], { MESHDEPLOY_URL: lab.coordinator.url, MESHDEPLOY_TOKEN: lab.coordinator.services.bootstrapAdminToken! })
    t.regex(listed.stdout, new RegExp(`${deviceId}.*active \\(credential shared!\\)`))
    // Cleared while the copy still runs, the warning comes back.
    const cleared = await lab.api.patch(`/v1/devices/${deviceId}`, { clearSharedCredential: true })
    t.is(cleared.sharedCredential, undefined)
    const again = await waitFor(async () => (await device()).sharedCredential, 'the device to be flagged again', 30_000, 100)
    t.true(Date.parse(again.detectedAt) >= Date.parse(flagged.detectedAt))
    // The operator blocks the device: both agents are shut out, and the warning goes with the block.
    await lab.api.post(`/v1/devices/${deviceId}/block`, { reason: 'agent.json copied' })
    const blocked = await device()
    t.is(blocked.status, 'blocked')
    t.is(blocked.sharedCredential, undefined)
  } finally {
    await copy?.stop()
    await genuine.stop()
  }
})

/** A request sent with a device's own credential straight to the coordinator, as a tool on the taken-over device would. */
async function asDevice (lab: AgentLab, credential: string, method: string, path: string, body?: unknown): Promise<{ status: number, body: any }> {
  const answer = await fetch(new URL(path, lab.coordinator.url), {
    method,
    headers: { authorization: `Bearer ${credential}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {})
  })
  const text = await answer.text()
  return { status: answer.status, body: text === '' ? undefined : JSON.parse(text) }
}

test.serial('agent attack case: a taken-over device uses its agent\'s own credential and key against a task for another device → refused at every turn; its agent never downloads nor installs it, and the task counts one device', async t => {
  const { lab } = t.context
  const secretFile = join(lab.root, 'payroll.sh')
  await writeFile(secretFile, `#!/bin/sh\necho installed > "$MESHDEPLOY_INSTALL_ROOT/payroll"\n# ${randomBytes(64 * 1024).toString('hex')}\n`)
  const secret = (await lab.coordinator.services.packages.find((await lab.api.uploadPackage(secretFile, { name: 'payroll', version: '1' })).id))!
  const attacker = await startLabAgent(lab, 'pc-taken-over')
  const victim = await startLabAgent(lab, 'pc-finance')
  try {
    const attackerId = attacker.agent.identity.deviceId
    const victimId = victim.agent.identity.deviceId
    const task = await lab.api.post('/v1/tasks', { packageId: secret.id, action: 'install', targets: { deviceIds: [victimId] } })
    await waitFor(async () => (await row(lab, task.id, victimId))?.state === 'succeeded' ? true : undefined, 'the victim to install', 60_000, 100)
    // What the attacker holds: the agent.json of the device it took over.
    const identity = (await loadIdentity(attacker.dataDir))!
    t.is(identity.deviceId, attackerId)
    const record = (fields: Partial<StatusRecord>): SignedEnvelope => signStatusRecord({
      type: 'meshdeploy.status', deviceId: attackerId, taskId: task.id, revision: 1, attempt: 1, seq: 1, state: 'downloading', at: Date.now(),
      bytesTotal: secret.sizeBytes, bytesDone: 0, bytesFromPeers: 0, bytesFromOrigin: 0, ...fields
    }, identity.key)
    const progressBefore = (await lab.api.get(`/v1/tasks/${task.id}`)).progress

    // 1. Reports itself into the task (the High finding): each record refused with its reason.
    const joined = await asDevice(lab, identity.credential, 'POST', '/v1/agents/status', { records: [record({}), record({ seq: 2, state: 'succeeded', bytesDone: secret.sizeBytes, exitCode: 0 })] })
    t.is(joined.status, 200, JSON.stringify(joined.body))
    t.deepEqual(joined.body.acknowledged, [])
    t.deepEqual(joined.body.rejected.map((rejection: any) => rejection.reason), ['not-assigned', 'not-assigned'])
    // 2. Declares itself its site's cache and names other hosts for its peers to dial.
    const self = await asDevice(lab, identity.credential, 'PUT', '/v1/agents/self', { siteCache: true, peerAddresses: ['/ip4/192.0.2.80/tcp/22', '/ip4/127.0.0.1/tcp/8651'] })
    t.is(self.status, 200)
    t.deepEqual(self.body.refusedAddresses, [{ address: '/ip4/192.0.2.80/tcp/22', reason: 'outside-device-network' }])
    // 3. Asks for its assignments: neither the task nor the package to prefetch.
    const assignments = await asDevice(lab, identity.credential, 'GET', '/v1/agents/assignments')
    t.is(assignments.status, 200)
    t.false(assignments.body.assignments.some((assignment: any) => assignment.taskId === task.id))
    t.false(assignments.body.prefetch.some((item: any) => item.taskId === task.id))
    // 4. Fetches the package's chunks from the origin straight away.
    const chunk = await asDevice(lab, identity.credential, 'GET', `/v1/content/${secret.chunks[0]}`)
    t.is(chunk.status, 403)
    t.is(chunk.body.reason, 'content-not-assigned')
    // 5. Probes for the package by name: the same answer as for a name that does not exist.
    const probed = await asDevice(lab, identity.credential, 'POST', '/v1/agents/requests', { package: 'payroll' })
    const unknown = await asDevice(lab, identity.credential, 'POST', '/v1/agents/requests', { package: 'payrollz' })
    t.is(probed.status, 404)
    t.deepEqual([unknown.status, unknown.body.reason], [probed.status, probed.body.reason])
    // 6. Names its host with escape sequences for the operator's terminal.
    const renamed = await asDevice(lab, identity.credential, 'POST', '/v1/agents/enroll', { token: lab.enrollToken, publicKey: 'ab'.repeat(32), hostname: '\u001b[2Jpc', platform: 'linux', arch: 'x64' })
    t.deepEqual([renamed.status, renamed.body.reason], [400, 'control-characters'])

    // The attacker's agent goes on with its own work: a task of its own, which it installs.
    const own = await lab.api.post('/v1/tasks', { packageId: lab.packageId, action: 'install', targets: { deviceIds: [attackerId] } })
    await waitFor(async () => (await row(lab, own.id, attackerId))?.state === 'succeeded' ? true : undefined, 'the attacker\'s own task to succeed', 60_000, 100)
    // By then it would have taken the other task too, had any of the above made it its own.
    t.is(await row(lab, task.id, attackerId), undefined, 'no row for the attacker in the other task')
    t.deepEqual(await history(lab, task.id, attackerId), [])
    t.false((await filesUnder(attacker.installRoot)).includes('payroll'), 'the other task\'s installer never ran on the attacker')
    t.true((await filesUnder(attacker.installRoot)).includes('installed'), 'its own installer did')
    const cached = await cachedChunks(attacker.dataDir)
    t.false(secret.chunks.some(id => cached.some(path => path.endsWith(id))), 'no chunk of the other package reached its cache')
    t.deepEqual((await lab.api.get(`/v1/tasks/${task.id}`)).progress, progressBefore, 'the task counts the victim alone')
    t.is((await lab.coordinator.services.devices.get(attackerId)).siteCache, undefined, 'not a site cache')
  } finally {
    await attacker.stop()
    await victim.stop()
  }
})
