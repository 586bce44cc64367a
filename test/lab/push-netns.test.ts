import test from 'ava'
import { generateKeyPairSync, randomInt } from 'node:crypto'
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ssh2 from 'ssh2'
import { ed25519KeyPair } from '../helpers/ssh-keys.js'
import { Lab, labAvailable } from '../../bench/lab/topology.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { builtAgentPackages, inCi, missingBuildTools } from '../helpers/agent-packages.js'
import { runCli, startCoordinatorProcess, waitFor, type CoordinatorProcess } from '../helpers/processes.js'
import { sshServerMissing, TestSshServer } from '../helpers/ssh-server.js'

const lab = await labAvailable()
const missing = !lab.ok ? lab.reason : await sshServerMissing() ?? ((await missingBuildTools()).length > 0 ? `${(await missingBuildTools()).join(', ')} missing (apt-get install -y dpkg rpm)` : undefined)
if (missing !== undefined) process.stderr.write(`\n  test/lab/push-netns ${inCi ? 'FAILS' : 'is SKIPPED'}: ${missing}\n\n`)
const pushTest = missing === undefined || inCi ? test.serial : test.skip

const PASSWORD = 'Correct-Horse-7-sudo'
const NO_SUDO_PASSWORD = 'helpdesk-only-9'
const PASSPHRASE = 'openssh key passphrase 42'

async function ended (api: ApiClient, id: string, timeoutMs = 180_000): Promise<any> {
  await waitFor(async () => {
    const push = await api.get(`/v1/push-installs/${id}?limit=1`)
    return push.status === 'finished' || push.status === 'cancelled' ? true : undefined
  }, `push ${id} to end`, timeoutMs, 250)
  return await api.get(`/v1/push-installs/${id}`)
}

pushTest(`push installs against a real OpenSSH server in a network namespace: the agent pushed with the second of two credentials (the first refused) enrolls and installs a task; an account without sudo rights passed over; PEM and OpenSSH keys; unreachable hosts, maximum attempts, a changed host key, a re-run; no secret anywhere${missing === undefined ? '' : ` — ${inCi ? 'FAILED' : 'SKIPPED'}: ${missing}`}`, async t => {
  if (missing !== undefined) {
    t.fail(`required in CI: ${missing}`)
    return
  }
  t.timeout(10 * 60_000)
  const built = await builtAgentPackages()
  const work = await mkdtemp(join(tmpdir(), 'md-lab-push-'))
  await chmod(work, 0o755)
  let hq: Lab | undefined
  let coordinator: CoordinatorProcess | undefined
  let api: ApiClient | undefined
  let server: TestSshServer | undefined
  try {
    hq = await Lab.create({ prefix: 'mdp', sites: 1, hostsPerSite: 1 })
    const [target] = hq.sites[0].hosts
    const port = randomInt(20_000, 30_000)
    const host = `${target.address}:${port}`

    // Keys: one the server does not know, one in PEM (ssh-keygen -m PEM), one in OpenSSH format with a passphrase.
    const unknownKey = ed25519KeyPair()
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const pem = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString()
    const pemPublic = ssh2.utils.parseKey(pem) as ssh2.ParsedKey
    const openssh = ed25519KeyPair({ passphrase: PASSPHRASE, cipher: 'aes256-ctr', rounds: 16 })
    server = await TestSshServer.start({
      lab: hq,
      ns: target.ns,
      address: target.address,
      port,
      folder: work,
      users: [
        { name: 'mdp-deploy', uid: 62101, authorizedKeys: [`ssh-rsa ${pemPublic.getPublicSSH().toString('base64')}`, openssh.public], sudo: 'nopasswd' },
        { name: 'mdp-admin', uid: 62102, password: PASSWORD, sudo: 'password' },
        { name: 'mdp-helpdesk', uid: 62103, password: NO_SUDO_PASSWORD, sudo: 'none' }
      ]
    })
    const firstHostKey = await server.fingerprint()

    coordinator = await startCoordinatorProcess({ host: hq.hqAddress, chunkSizeKiB: 64, prefix: hq.prefixFor(hq.hq), extraArgs: ['--agent-packages', built.dir] })
    const coordinatorPort = Number(new URL(coordinator.url).port)
    const exposed = await hq.exposeToHost(hq.hq, hq.hqAddress, coordinatorPort)
    api = new ApiClient({ url: exposed.url, token: coordinator.adminToken })
    const cliEnv = { MESHDEPLOY_URL: exposed.url, MESHDEPLOY_TOKEN: coordinator.adminToken }

    const passwordFile = join(work, 'admin-password')
    await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 })
    const added = await runCli(['credential', 'add', '--name', 'branch-admin', '--user', 'mdp-admin', '--password-file', passwordFile, '--json'], cliEnv)
    t.is(added.code, 0, added.stderr)
    const adminCredential = JSON.parse(added.stdout)
    const unknown = await api.post('/v1/credentials', { type: 'ssh-key', name: 'retired-key', user: 'mdp-deploy', privateKey: unknownKey.private })
    await api.post('/v1/credentials', { type: 'account', name: 'helpdesk', user: 'mdp-helpdesk', password: NO_SUDO_PASSWORD })
    const pemKey = await api.post('/v1/credentials', { type: 'ssh-key', name: 'deploy-pem', user: 'mdp-deploy', privateKey: pem })
    const opensshKey = await api.post('/v1/credentials', { type: 'ssh-key', name: 'deploy-openssh', user: 'mdp-deploy', privateKey: openssh.private, passphrase: PASSPHRASE })

    // 1. The agent: the first credential is refused, the second (an account that sudo lets in with its password) installs it.
    const prefix = join(work, 'pushed-agent')
    const agentPush = await api.post('/v1/push-installs', {
      hosts: [host], credentials: [unknown.id, adminCredential.id], install: 'agent', agent: { installPrefix: prefix, site: 'lab-branch' }, maxAttempts: 1
    })
    const agentResult = await ended(api, agentPush.id)
    const agentHost = agentResult.hosts[0]
    t.is(agentHost.state, 'succeeded', JSON.stringify(agentHost.attempts))
    t.deepEqual(agentHost.attempts[0].credentials.map((entry: any) => [entry.credentialName, entry.outcome]), [
      ['retired-key', 'authentication-refused'], ['branch-admin', 'accepted']
    ])
    t.like(agentHost, { credentialName: 'branch-admin', hostKeyFingerprint: firstHostKey })
    t.regex(agentHost.platform, /Debian/)
    const device = await api.get(`/v1/devices/${agentHost.deviceId as string}`)
    t.like(device, { site: 'lab-branch', platform: 'linux', agentVersion: built.manifest.version })
    t.is((await stat(join(prefix, 'etc/meshdeploy/agent.yaml'))).mode & 0o777, 0o600)
    t.true((await stat(join(prefix, 'opt/meshdeploy-agent/bin/meshdeploy-agent'))).isFile(), 'the .deb for Debian, unpacked under the prefix')

    // The pushed agent completes an install task from the coordinator in the other namespace.
    const marker = join(work, 'task-script.sh')
    await writeFile(marker, '#!/bin/sh\nset -e\nmkdir -p "$MESHDEPLOY_INSTALL_ROOT/srv/pushed"\nid -u > "$MESHDEPLOY_INSTALL_ROOT/srv/pushed/installed-by"\n')
    const taskPackage = await api.uploadPackage(marker, { name: 'pushed-agent-task', version: '1' })
    const task = await api.post('/v1/tasks', { packageId: taskPackage.id, action: 'install', targets: { deviceIds: [device.id] }, maxAttempts: 1 })
    const [row] = await waitFor(async () => {
      const { devices } = await api!.get(`/v1/tasks/${task.id as string}/devices`)
      return devices.length === 1 && ['succeeded', 'failed'].includes(devices[0].state) ? devices : undefined
    }, 'the pushed agent to complete its task', 120_000, 250)
    t.is(row.state, 'succeeded', row.message)
    t.is((await readFile(join(prefix, 'srv/pushed/installed-by'), 'utf8')).trim(), '0')

    // 2. A package by the CLI: an account sudo refuses, then the PEM key (sudo without a password); beside it a host that is not there, at most 2 attempts.
    const okScript = join(work, 'ok.sh')
    const okMarker = join(work, 'package-marker')
    await writeFile(okScript, `#!/bin/sh\nset -e\nid -u > ${okMarker}\n`)
    const okPackage = await api.uploadPackage(okScript, { name: 'ok-package', version: '1', detection: { type: 'file', path: okMarker } })
    const unreachable = '10.77.1.99'
    const cli = await runCli(['push', '--hosts', `${host},${unreachable}`, '--credentials', 'helpdesk,deploy-pem', '--package', okPackage.id, '--max-attempts', '2', '--retry-delay-seconds', '1', '--connect-timeout-seconds', '5', '--json'], cliEnv)
    t.is(cli.code, 1, 'some host failed')
    t.regex(cli.stderr, /hosts {2}run 1 (queued|running|finished)/, 'the progress view')
    const cliResult = JSON.parse(cli.stdout)
    const okHost = cliResult.hosts.find((entry: any) => entry.host === host)
    t.like(okHost, { state: 'succeeded', credentialName: 'deploy-pem' })
    t.deepEqual(okHost.attempts[0].credentials.map((entry: any) => [entry.credentialName, entry.outcome]), [['helpdesk', 'not-enough-rights'], ['deploy-pem', 'accepted']])
    t.regex(okHost.attempts[0].credentials[0].detail, /sudo refused/)
    t.is((await readFile(okMarker, 'utf8')).trim(), '0')
    const gone = cliResult.hosts.find((entry: any) => entry.host === unreachable)
    t.is(gone.state, 'failed')
    t.deepEqual(gone.attempts.map((attempt: any) => attempt.reason), ['unreachable', 'unreachable'])
    t.regex(gone.attempts[0].detail, /10\.77\.1\.99:22/)

    // 3. A failing installer with the OpenSSH key and its passphrase: exactly maxAttempts attempts, each with the exit code.
    const failScript = join(work, 'fail.sh')
    await writeFile(failScript, '#!/bin/sh\necho "disk full" >&2\nexit 3\n')
    const failPackage = await api.uploadPackage(failScript, { name: 'failing-package', version: '1' })
    const failing = await ended(api, (await api.post('/v1/push-installs', { hosts: [host], credentials: [opensshKey.id], install: { packageId: failPackage.id }, maxAttempts: 2, retryDelaySeconds: 1 })).id)
    t.deepEqual(failing.hosts[0].attempts.map((attempt: any) => [attempt.reason, attempt.exitCode]), [['installer-failed', 3], ['installer-failed', 3]])
    t.regex(failing.hosts[0].attempts[0].outputTail, /disk full/)
    t.is(failing.hosts[0].credentialName, 'deploy-openssh')

    // 4. The host's key changes: refused before any login, at once; the operator's fingerprint lets it in; the saved push re-runs.
    await server.restartWithNewKey('host_key_2')
    const secondHostKey = await server.fingerprint()
    t.not(secondHostKey, firstHostKey)
    const mismatch = await ended(api, (await api.post('/v1/push-installs', { hosts: [host], credentials: [pemKey.id], install: { packageId: okPackage.id }, maxAttempts: 3 })).id)
    t.like(mismatch.hosts[0], { state: 'failed', hostKeyFingerprint: secondHostKey })
    t.is(mismatch.hosts[0].attempts.length, 1)
    t.like(mismatch.hosts[0].attempts[0], { reason: 'host-key-mismatch', credentials: [] })
    t.false(server.logText.includes('Accepted publickey for mdp-deploy') && server.logText.split('Server listening').at(-1)!.includes('Accepted'), 'no login reached the server with the new key')
    const confirmed = await ended(api, (await api.post('/v1/push-installs', { hosts: [host], credentials: [pemKey.id], install: { packageId: okPackage.id }, hostKeyFingerprints: { [host]: secondHostKey } })).id)
    t.is(confirmed.hosts[0].state, 'succeeded')
    t.regex(confirmed.hosts[0].message, /already installed/)
    await api.post(`/v1/push-installs/${mismatch.id as string}/runs`, {})
    const rerun = await ended(api, mismatch.id)
    t.is(rerun.run, 2)
    t.is(rerun.hosts[0].state, 'succeeded', 'the saved push runs again with the key the operator confirmed')

    // Nothing of a secret in answers, the coordinator's log or the audit log.
    const answers = JSON.stringify([agentResult, cliResult, failing, mismatch, confirmed, rerun, await api.get('/v1/credentials'), await api.get('/v1/push-installs')]) + added.stdout + added.stderr + cli.stderr
    const log = await readFile(coordinator.logFile, 'utf8')
    const audit = JSON.stringify(await api.get('/v1/audit?limit=1000'))
    const keyMaterial = (text: string): string[] => { const body = text.split('\n').filter(line => !line.startsWith('-----') && line.trim() !== '').join(''); return [body.slice(20, 60), body.slice(-60, -20)] }
    for (const secret of [PASSWORD, NO_SUDO_PASSWORD, PASSPHRASE, ...keyMaterial(pem), ...keyMaterial(openssh.private), ...keyMaterial(unknownKey.private)]) {
      t.false(answers.includes(secret), 'no secret in the answers')
      t.false(log.includes(secret), 'no secret in the coordinator\'s log')
      t.false(audit.includes(secret), 'no secret in the audit log')
    }
    t.regex(log, /push install run ended/)
  } finally {
    api?.close()
    await server?.stop()
    await coordinator?.stop()
    await hq?.destroy()
    if (coordinator !== undefined) await rm(coordinator.dataDir, { recursive: true, force: true })
    await rm(work, { recursive: true, force: true })
  }
})
