import test, { type ExecutionContext } from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ed25519KeyPair } from '../helpers/ssh-keys.js'
import { inspectPrivateKey } from '../../coordinator/credentials/ssh-keys.js'
import supertest from 'supertest'
import { createApp } from '../../coordinator/http/app.js'
import { openServices } from '../../coordinator/services.js'
import { generateKeyPair, toHex } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'
import { FakeClock, openTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js'
import { waitFor } from '../helpers/processes.js'
import { StubHost, StubTransport, stubFingerprint } from '../helpers/push-stub.js'
import { tempFolder } from '../helpers/temp.js'

const PASSWORD = 'S3cret-sudo-password'
const PASSPHRASE = 'key passphrase, never shown'

interface Fixture {
  c: TestCoordinator
  transport: StubTransport
  clock: FakeClock
  sleeps: number[]
  admin: string
  credentials: { wrongKey: string, key: string, account: string, noSudo: string }
  keyFingerprint: string
  gate?: Promise<void>
}

/** A coordinator whose push installs reach stub hosts, with a clock its waits move, agent packages, and four credentials. */
async function fixture (t: ExecutionContext, init: { pushQueue?: { running?: number, queued?: number }, blockSleeps?: boolean } = {}): Promise<Fixture> {
  const clock = new FakeClock()
  const sleeps: number[] = []
  let release: () => void = () => {}
  const gate = new Promise<void>(resolve => { release = resolve })
  t.teardown(() => { release() })
  const transport = new StubTransport()
  const agentPackagesDir = await tempFolder(t, 'md-agent-packages-')
  const deb = randomBytes(64 * 1024)
  await writeFile(join(agentPackagesDir, 'meshdeploy-agent_0.1.0-1_amd64.deb'), deb)
  await writeFile(join(agentPackagesDir, 'manifest.json'), JSON.stringify({
    name: 'meshdeploy-agent', version: '0.1.0', revision: 1, builtAt: new Date().toISOString(), node: 'v20.20.2',
    packages: [{ file: 'meshdeploy-agent_0.1.0-1_amd64.deb', format: 'deb', arch: 'x64', sizeBytes: deb.byteLength, sha256: createHash('sha256').update(deb).digest('hex') }]
  }))
  const c = await openTestCoordinator({
    now: clock.now,
    services: {
      pushTransport: transport,
      agentPackagesDir,
      ...(init.pushQueue !== undefined ? { pushQueue: init.pushQueue } : {}),
      pushSleep: async (ms, signal) => {
        if (init.blockSleeps === true && ms > 1000) await new Promise<void>((resolve, reject) => { void gate.then(resolve); signal.addEventListener('abort', () => { reject(new Error('aborted')) }, { once: true }) })
        if (signal.aborted) throw new Error('aborted')
        sleeps.push(ms)
        clock.advance(ms)
      }
    }
  })
  t.teardown(async () => { await c.close() })
  c.services.pushInstalls.setEndpoint({ url: 'https://deploy.example.org:8650', pinSha256: 'ab'.repeat(32) })
  const admin = `Bearer ${c.adminToken}`
  const add = async (body: object): Promise<string> => (await c.http.post('/v1/credentials').set('authorization', admin).send(body).expect(201)).body.id
  const wrong = ed25519KeyPair()
  const key = ed25519KeyPair({ passphrase: PASSPHRASE, cipher: 'aes256-ctr', rounds: 4 })
  const credentials = {
    wrongKey: await add({ type: 'ssh-key', name: 'old-key', user: 'deploy', privateKey: wrong.private }),
    key: await add({ type: 'ssh-key', name: 'deploy-key', user: 'deploy', privateKey: key.private, passphrase: PASSPHRASE }),
    account: await add({ type: 'account', name: 'branch-admin', user: 'admin', password: PASSWORD }),
    noSudo: await add({ type: 'account', name: 'helpdesk', user: 'helpdesk', password: 'helpdesk-password' })
  }
  return { c, transport, clock, sleeps, admin, credentials, keyFingerprint: inspectPrivateKey(key.private, PASSPHRASE).fingerprint, gate }
}

/** A stub host that knows the fixture's users: deploy (key, sudo without password), admin (password, sudo with it), helpdesk (no sudo). */
function stubHost (f: Fixture, address: string, seed = address): StubHost {
  const host = new StubHost(stubFingerprint(seed))
  host.users.set('deploy', { uid: 1000, keyFingerprint: f.keyFingerprint, sudo: 'nopasswd' })
  host.users.set('admin', { uid: 1001, password: PASSWORD, sudo: 'password' })
  host.users.set('helpdesk', { uid: 1002, password: 'helpdesk-password', sudo: 'none' })
  f.transport.hosts.set(`${address}:22`, host)
  return host
}

async function ended (f: Fixture, id: string): Promise<any> {
  await waitFor(async () => {
    const push = await f.c.services.pushInstalls.get(id)
    return push.status === 'finished' || push.status === 'cancelled' ? true : undefined
  }, `push ${id} to end`, 30_000, 20)
  return (await f.c.http.get(`/v1/push-installs/${id}`).set('authorization', f.admin).expect(200)).body
}

function hostOf (push: any, host: string): any {
  return push.hosts.find((entry: any) => entry.host === host)
}

test('pushing the agent: credentials tried in order, sudo with the password on standard input, enrolled devices, unreachable hosts tried up to the maximum, hosts no credential opens ended at once', async t => {
  const f = await fixture(t)
  const good = stubHost(f, '10.1.0.21')
  good.onAgentInstall = async config => {
    await f.c.http.post('/v1/agents/enroll').send({ token: config.enrollToken, publicKey: toHex(generateKeyPair().publicKey), hostname: 'pc-21', platform: 'linux', arch: 'x64', ...(config.site !== undefined ? { site: config.site } : {}) }).expect(201)
  }
  const locked = stubHost(f, '10.1.0.23')
  locked.users.clear()
  const { body: created } = await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send({
    hosts: ['10.1.0.21', '10.1.0.22', '10.1.0.23'],
    credentials: [f.credentials.wrongKey, f.credentials.noSudo, f.credentials.account],
    install: 'agent',
    agent: { site: 'berlin', groups: ['kiosk'] },
    maxAttempts: 3,
    retryDelaySeconds: 90
  }).expect(202)
  t.is(created.name, 'Installation of the meshdeploy agent 0.1.0')
  t.is(created.status, 'queued')
  t.deepEqual(created.counts, { pending: 3, running: 0, waiting: 0, succeeded: 0, failed: 0, cancelled: 0 })

  const push = await ended(f, created.id)
  t.is(push.status, 'finished')
  t.like(push.counts, { succeeded: 1, failed: 2 })
  const installed = hostOf(push, '10.1.0.21')
  t.like(installed, { state: 'succeeded', credentialName: 'branch-admin', platform: 'Debian GNU/Linux 12 (bookworm), x86_64' })
  t.deepEqual(installed.attempts[0].credentials.map((entry: any) => [entry.credentialName, entry.outcome]), [
    ['old-key', 'authentication-refused'], ['helpdesk', 'not-enough-rights'], ['branch-admin', 'accepted']
  ], 'the first two are refused and recorded, the third is accepted')
  t.regex(installed.attempts[0].credentials[1].detail, /sudo refused/)
  const device = (await f.c.http.get(`/v1/devices/${installed.deviceId as string}`).set('authorization', f.admin).expect(200)).body
  t.like(device, { hostname: 'pc-21', site: 'berlin' })
  const config = good.files.get('/tmp/meshdeploy-push.Stub0001/agent.yaml')!.toString()
  t.regex(config, /^coordinator: https:\/\/deploy\.example\.org:8650$/m)
  t.regex(config, /^pinSha256: (ab){32}$/m, 'pushed agents pin the coordinator\'s certificate')
  t.regex(config, /^enrollToken: mde_/m)
  const { body: tokens } = await f.c.http.get('/v1/enrollment-tokens').set('authorization', f.admin).expect(200)
  t.like(tokens.enrollmentTokens.find((token: any) => token.lastDeviceId === device.id), { maxUses: 1, uses: 1, site: 'berlin', groups: ['kiosk'], createdBy: `push ${created.id as string}` })
  t.false(good.commands.some(command => command.includes(PASSWORD)), 'the password is never on a command line')
  t.true(good.stdins.some(stdin => stdin === `${PASSWORD}\n`), 'sudo got it on standard input')
  t.true(good.commands.some(command => command.startsWith('sudo -S -p \'\' -- sh -c ') && command.includes('dpkg --force-confold --install')))

  const unreachable = hostOf(push, '10.1.0.22')
  t.is(unreachable.state, 'failed')
  t.deepEqual(unreachable.attempts.map((attempt: any) => attempt.reason), ['unreachable', 'unreachable', 'unreachable'], 'maxAttempts honoured')
  t.regex(unreachable.message, /no attempts left/)
  t.deepEqual(f.sleeps.filter(ms => ms === 90_000).length, 2, 'the retry delay between attempts')

  const refused = hostOf(push, '10.1.0.23')
  t.like(refused, { state: 'failed' })
  t.is(refused.attempts.length, 1, 'credentials refused everywhere: no further attempt')
  t.is(refused.attempts[0].reason, 'authentication-refused')
  t.deepEqual(refused.attempts[0].credentials.map((entry: any) => entry.outcome), ['authentication-refused', 'authentication-refused', 'authentication-refused'])

  const { body: list } = await f.c.http.get('/v1/push-installs').set('authorization', f.admin).expect(200)
  t.like(list.pushInstalls[0], { id: created.id, hostCount: 3, status: 'finished' })
  t.false('hosts' in list.pushInstalls[0])
  for (const text of [JSON.stringify(push), JSON.stringify(list), JSON.stringify((await f.c.http.get('/v1/audit').set('authorization', f.admin)).body)]) {
    t.false(text.includes(PASSWORD))
    t.false(text.includes(PASSPHRASE))
  }
})

test('pushing a package: its installer with the package\'s exit codes, attempts up to the maximum, a host that has it already skipped, the reboot policy', async t => {
  const f = await fixture(t)
  const script = join(await tempFolder(t, 'md-push-pkg-'), 'setup.sh')
  await writeFile(script, '#!/bin/sh\necho installing\n')
  const { body: pkg } = await f.c.http.post('/v1/packages').set('authorization', f.admin)
    .field('metadata', JSON.stringify({ name: 'tool', version: '2.0', detection: { type: 'linux-package', manager: 'dpkg', name: 'tool', version: '2.0' }, exitCodes: { 7: 'success-reboot-required' } }))
    .attach('file', script).expect(201)
  const failing = stubHost(f, '10.1.0.31')
  failing.installExit = () => 5
  const present = stubHost(f, '10.1.0.32')
  present.detection = { exitCode: 0, stdout: 'installed\t2.0\n' }
  const needsReboot = stubHost(f, '10.1.0.33')
  let installedYet = false
  needsReboot.installExit = () => { installedYet = true; return 7 }
  Object.defineProperty(needsReboot, 'detection', { get: () => installedYet ? { exitCode: 0, stdout: 'installed\t2.0\n' } : { exitCode: 1, stdout: '' } })

  const { body: created } = await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send({
    hosts: ['10.1.0.31', '10.1.0.32', '10.1.0.33'], credentials: [f.credentials.key], install: { packageId: pkg.id, runArgs: ['--quiet'] }, maxAttempts: 2, retryDelaySeconds: 5
  }).expect(202)
  const push = await ended(f, created.id)
  const failed = hostOf(push, '10.1.0.31')
  t.is(failed.state, 'failed')
  t.deepEqual(failed.attempts.map((attempt: any) => [attempt.reason, attempt.exitCode]), [['installer-failed', 5], ['installer-failed', 5]])
  t.is(failing.installs, 2)
  t.true(failing.commands.some(command => command.startsWith('sudo -n -- sh -c ') && command.includes('/bin/sh /tmp/meshdeploy-push.Stub0001/setup.sh --quiet')))
  t.deepEqual([...failing.files.values()][0], Buffer.from('#!/bin/sh\necho installing\n'), 'the package, as uploaded, from its chunks')
  t.like(hostOf(push, '10.1.0.32'), { state: 'succeeded', message: 'already installed: tool 2.0 is installed (dpkg)' })
  t.is(present.installs, 0)
  t.like(hostOf(push, '10.1.0.33'), { state: 'succeeded', rebootRequired: true })
  t.regex(hostOf(push, '10.1.0.33').message, /needs a reboot, which this push's policy \(never\) leaves to the operator/)
  t.false(needsReboot.commands.some(command => command.includes('shutdown -r')))

  const { body: rebooting } = await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send({
    hosts: ['10.1.0.33'], credentials: [f.credentials.key], install: { packageId: pkg.id }, reboot: { policy: 'always', delaySeconds: 300, message: 'tool 2.0' }
  }).expect(202)
  installedYet = false
  const rebooted = await ended(f, rebooting.id)
  t.like(hostOf(rebooted, '10.1.0.33'), { state: 'succeeded', rebootScheduled: true })
  t.true(needsReboot.commands.some(command => command.includes('shutdown -r +5 ') && command.includes('tool 2.0')))
})

test('host keys: pinned at first contact, a changed key refused before any credential is sent, an operator\'s fingerprint accepted, and the saved push run again for the hosts that failed', async t => {
  const f = await fixture(t)
  const host = stubHost(f, '10.1.0.41')
  const other = stubHost(f, '10.1.0.42')
  const create = async (body: object): Promise<any> => await ended(f, (await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send({ credentials: [f.credentials.key], install: 'agent', agent: { enrollTimeoutSeconds: 10 }, maxAttempts: 3, ...body }).expect(202)).body.id)
  for (const stub of [host, other]) stub.onAgentInstall = async config => { await f.c.http.post('/v1/agents/enroll').send({ token: config.enrollToken, publicKey: toHex(generateKeyPair().publicKey), hostname: 'pc', platform: 'linux', arch: 'x64' }).expect(201) }

  const first = await create({ hosts: ['10.1.0.41'] })
  t.is(hostOf(first, '10.1.0.41').state, 'succeeded')
  t.like(await f.c.services.store.collections.hostKeys.get('10.1.0.41:22'), { fingerprint: host.fingerprint, pinnedBy: 'first-contact' })

  host.fingerprint = stubFingerprint('a new key')
  const loginsBefore = f.transport.logins.length
  const changed = await create({ hosts: ['10.1.0.41', '10.1.0.42'] })
  const refused = hostOf(changed, '10.1.0.41')
  t.is(refused.state, 'failed')
  t.is(refused.attempts.length, 1, 'a changed key is not tried again')
  t.is(refused.attempts[0].reason, 'host-key-mismatch')
  t.deepEqual(refused.attempts[0].credentials, [], 'no credential was offered to it')
  t.regex(refused.attempts[0].detail, /pinned at first contact/)
  t.is(refused.hostKeyFingerprint, host.fingerprint, 'the key it presented is shown')
  t.is(f.transport.logins.filter(login => login.host === '10.1.0.41').length, f.transport.logins.slice(0, loginsBefore).filter(login => login.host === '10.1.0.41').length)
  t.is(hostOf(changed, '10.1.0.42').state, 'succeeded')

  const given = await create({ hosts: ['10.1.0.41'], hostKeyFingerprints: { '10.1.0.41': host.fingerprint.replace('SHA256:', '') } })
  t.is(hostOf(given, '10.1.0.41').state, 'succeeded')
  t.like(await f.c.services.store.collections.hostKeys.get('10.1.0.41:22'), { fingerprint: host.fingerprint, pinnedBy: 'admin' })
  const wrong = await create({ hosts: ['10.1.0.41'], hostKeyFingerprints: { '10.1.0.41': stubFingerprint('yet another') } })
  t.is(hostOf(wrong, '10.1.0.41').attempts[0].reason, 'host-key-mismatch')

  // The saved push is run again: only the host that failed, now with the key the operator confirmed.
  const { body: rerun } = await f.c.http.post(`/v1/push-installs/${changed.id as string}/runs`).set('authorization', f.admin).send({}).expect(202)
  t.is(rerun.run, 2)
  t.deepEqual(rerun.counts.pending, 1)
  const second = await ended(f, changed.id)
  t.deepEqual(second.hosts.map((entry: any) => [entry.host, entry.state]), [['10.1.0.41', 'succeeded']])
  const { body: firstRun } = await f.c.http.get(`/v1/push-installs/${changed.id as string}?run=1`).set('authorization', f.admin).expect(200)
  t.deepEqual(firstRun.hosts.map((entry: any) => entry.state), ['failed', 'succeeded'], 'earlier runs stay readable')
  await f.c.http.post(`/v1/push-installs/${changed.id as string}/runs`).set('authorization', f.admin).send({}).expect(409)
  const { body: all } = await f.c.http.post(`/v1/push-installs/${changed.id as string}/runs`).set('authorization', f.admin).send({ hosts: 'all' }).expect(202)
  t.is(all.counts.pending, 2)
  await ended(f, changed.id)
})

test('an agent that does not enroll is reported with its log; a saved push starts when asked; requests are checked before anything runs', async t => {
  const f = await fixture(t)
  stubHost(f, '10.1.0.51')
  const { body: saved } = await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send({
    hosts: ['10.1.0.51'], credentials: [f.credentials.key], install: 'agent', agent: { enrollTimeoutSeconds: 30 }, maxAttempts: 1, start: false
  }).expect(201)
  t.is(saved.status, 'saved')
  t.is(saved.run, 0)
  await f.c.http.post(`/v1/push-installs/${saved.id as string}/runs`).set('authorization', f.admin).send({ hosts: 'all' }).expect(202)
  const push = await ended(f, saved.id)
  const host = hostOf(push, '10.1.0.51')
  t.like(host.attempts[0], { reason: 'not-enrolled', outputTail: 'agent: cannot reach the coordinator\n' })
  const { body: tokens } = await f.c.http.get('/v1/enrollment-tokens').set('authorization', f.admin).expect(200)
  t.true(tokens.enrollmentTokens.every((token: any) => token.active === false), 'the unused one-time token is revoked')

  const problem = async (body: object, status: number): Promise<any> => (await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send({ credentials: [f.credentials.key], install: 'agent', hosts: ['10.1.0.51'], ...body }).expect(status)).body
  t.regex((await problem({ reboot: 'ask' }, 400)).errors[0].message, /needs an agent on the device/)
  t.deepEqual((await problem({ hosts: ['ok-host', 'bad host', 'ok-host'] }, 400)).errors.map((error: any) => error.path), ['hosts.1', 'hosts.2'])
  t.is((await problem({ credentials: ['cred-nope'] }, 400)).errors[0].path, 'credentials.0')
  t.is((await problem({ hostKeyFingerprints: { 'other-host': 'SHA256:x' } }, 400)).errors[0].path, 'hostKeyFingerprints.other-host')
  t.is((await problem({ agent: { installPrefix: '/srv/lab' }, reboot: 'always' }, 400)).errors[0].path, 'reboot')
  t.is((await problem({ install: { packageId: 'pkg-nope' } }, 404)).reason, 'not-found')
  const { body: viewer } = await f.c.http.post('/v1/tokens').set('authorization', f.admin).send({ name: 'watcher', role: 'viewer' }).expect(201)
  await f.c.http.post('/v1/push-installs').set('authorization', `Bearer ${viewer.token as string}`).send({ credentials: [f.credentials.key], install: 'agent', hosts: ['x'] }).expect(403)
  await f.c.http.get(`/v1/push-installs/${saved.id as string}`).set('authorization', `Bearer ${viewer.token as string}`).expect(200)
})

test('runs queue within their bound (503 past it), and a cancelled push cancels the hosts still waiting', async t => {
  const f = await fixture(t, { pushQueue: { running: 1, queued: 1 }, blockSleeps: true })
  const body = { hosts: ['10.9.9.9'], credentials: [f.credentials.key], install: 'agent', maxAttempts: 3, retryDelaySeconds: 600 }
  const { body: first } = await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send(body).expect(202)
  await waitFor(async () => (await f.c.services.pushInstalls.get(first.id)).counts.waiting === 1 ? true : undefined, 'the unreachable host to wait for its next attempt', 10_000, 20)
  const { body: second } = await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send(body).expect(202)
  t.is(second.status, 'queued')
  const full = await f.c.http.post('/v1/push-installs').set('authorization', f.admin).send(body).expect(503)
  t.is(full.body.reason, 'push-queue-full')
  t.is(full.headers['retry-after'], '30')

  const { body: cancelledQueued } = await f.c.http.post(`/v1/push-installs/${second.id as string}/cancel`).set('authorization', f.admin).expect(200)
  t.like(cancelledQueued, { status: 'cancelled', counts: { cancelled: 1 } })
  await f.c.http.post(`/v1/push-installs/${first.id as string}/cancel`).set('authorization', f.admin).expect(200)
  const cancelled = await ended(f, first.id)
  t.is(cancelled.status, 'cancelled')
  t.like(cancelled.hosts[0], { state: 'cancelled' })
  t.is(cancelled.hosts[0].attempts.length, 1)
  await f.c.http.post(`/v1/push-installs/${first.id as string}/cancel`).set('authorization', f.admin).expect(409)
})

test('a run cut short by a stop goes on at the next start, the attempt it cut recorded as interrupted', async t => {
  const dataDir = await tempFolder(t, 'md-push-restart-')
  const transport = new StubTransport()
  let release: () => void = () => {}
  const blocked = new Promise<void>(resolve => { release = resolve })
  const host = new StubHost(stubFingerprint('h'))
  host.users.set('admin', { uid: 0, password: PASSWORD, sudo: 'none' })
  transport.hosts.set('10.1.0.61:22', host)
  const script = join(dataDir, 'setup.sh')
  await writeFile(script, '#!/bin/sh\ntrue\n')
  const first = await openServices({ dataDir, logger: silentLogger(), pushTransport: transport, pushSleep: async () => {}, agentPackagesDir: dataDir })
  t.teardown(() => { release() })
  const http = supertest(createApp(first).callback())
  const { body: pkg } = await http.post('/v1/packages').set('authorization', `Bearer ${first.bootstrapAdminToken!}`).field('metadata', JSON.stringify({ name: 'tool', version: '1' })).attach('file', script).expect(201)
  const packageId = pkg.id as string
  const credential = await first.credentials.add({ type: 'account', name: 'root', user: 'admin', password: PASSWORD }, 'admin')
  // The installer hangs until the coordinator stops.
  let installerStarted = false
  let released = false
  const original = transport.open.bind(transport)
  transport.open = async (target, login, options) => {
    const session = await original(target, login, options)
    return {
      exec: async (command, execOptions) => {
        if (command.includes('/bin/sh /tmp/')) installerStarted = true
        if (command.includes('/bin/sh /tmp/') && !released) await new Promise<void>((resolve, reject) => { void blocked.then(resolve); execOptions.signal?.addEventListener('abort', () => { reject(new Error('aborted')) }, { once: true }) })
        return await session.exec(command, execOptions)
      },
      close: () => { session.close() }
    }
  }
  const push = await first.pushInstalls.create({ hosts: ['10.1.0.61'], credentials: [credential.id], install: { packageId }, maxAttempts: 2 }, 'admin')
  await waitFor(async () => installerStarted ? true : undefined, 'the installer to start', 10_000, 20)
  await first.close()

  released = true
  const second = await openServices({ dataDir, logger: silentLogger(), pushTransport: transport, pushSleep: async () => {}, agentPackagesDir: dataDir })
  t.teardown(async () => { await second.close() })
  await waitFor(async () => (await second.pushInstalls.get(push.id)).status === 'finished' ? true : undefined, 'the resumed run to end', 10_000, 20)
  const { hosts } = await second.pushInstalls.hosts(push.id)
  t.deepEqual(hosts[0].attempts.map(attempt => [attempt.outcome, attempt.reason]), [['failed', 'interrupted'], ['succeeded', undefined]])
  t.is(hosts[0].state, 'succeeded')
})
