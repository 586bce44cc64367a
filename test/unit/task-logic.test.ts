import test from 'ava'
import {
  exitOutcome, generateKeyPair, parseExitCodeMap, signPackageHash, verifyPackageSignature, validateManifest, uninstallNeedsContent,
  packageIdOf, needsContent, type Manifest
} from '../../protocol/index.js'
import { releaseAllowance, RELEASE_WINDOW_MS } from '../../coordinator/tasks/release-rate.js'
import { matchesTargets } from '../../coordinator/tasks/targets.js'
import { phaseOf } from '../../coordinator/tasks/service.js'
import { inDepartment, normalizeDepartment } from '../../coordinator/directory/service.js'
import { parseCsv, parseUsersCsv } from '../../coordinator/directory/csv.js'
import { vpnInterfacesAmong, VpnDetector, DEFAULT_VPN_INTERFACE_PREFIXES } from '../../agent/vpn.js'
import { checkPackageConsistency } from '../../coordinator/packages/service.js'

test('rate control releases at most N devices in any sliding minute (fake clock)', t => {
  const T = 1_000_000
  const rows: Array<[number, number[], number, number, number | undefined]> = [
    // devicesPerMinute, earlier releases, now, allowed, next slot
    [3, [], T, 3, undefined],
    [3, [T - 10_000], T, 2, undefined],
    [3, [T - 30_000, T - 20_000, T - 10_000], T, 0, T - 30_000 + RELEASE_WINDOW_MS],
    [3, [T - 60_000, T - 20_000, T - 10_000], T, 1, undefined],
    [2, [T, T, T - 5_000], T, 0, T + RELEASE_WINDOW_MS],
    [1, [T - 59_999], T, 0, T + 1],
    [5, [T + 1000], T, 5, undefined]
  ]
  for (const [devicesPerMinute, recentReleasesMs, nowMs, allowed, nextSlotAtMs] of rows) {
    const answer = releaseAllowance({ devicesPerMinute, recentReleasesMs, nowMs })
    t.is(answer.allowed, allowed, `${devicesPerMinute}/min after ${recentReleasesMs.map(at => at - T).join(',')}`)
    t.is(answer.nextSlotAtMs, nextSlotAtMs)
  }
  // Ten minutes of a 4 per minute task ticking every second releases 40 devices, never 5 in a minute.
  const released: number[] = []
  for (let now = T; now < T + 10 * 60_000; now += 1000) {
    const { allowed } = releaseAllowance({ devicesPerMinute: 4, recentReleasesMs: released, nowMs: now })
    for (let index = 0; index < allowed; index++) released.push(now)
  }
  t.is(released.length, 40)
  for (const at of released) t.true(released.filter(other => other > at - RELEASE_WINDOW_MS && other <= at).length <= 4)
})

test('targets reach devices through the people who use them: users, departments with their sub-departments, roles', t => {
  const device = { id: 'dev-1', hostname: 'PC-01', groups: [], site: 'berlin', status: 'active' as const }
  const alice = { id: 'alice', department: 'Sales/EMEA', role: 'Manager' }
  t.true(matchesTargets(device, { deviceIds: ['pc-01'] }), 'host names without regard to case')
  t.true(matchesTargets(device, { departments: ['Sales'] }, [alice]))
  t.true(matchesTargets(device, { departments: ['sales/emea'] }, [alice]))
  t.false(matchesTargets(device, { departments: ['Sales/APAC'] }, [alice]))
  t.false(matchesTargets(device, { departments: ['Sal'] }, [alice]), 'a prefix of a name is not a parent department')
  t.true(matchesTargets(device, { roles: ['manager'] }, [alice]))
  t.true(matchesTargets(device, { users: ['ALICE'] }, [alice]))
  t.false(matchesTargets(device, { roles: ['developer'] }, [alice]))
  t.false(matchesTargets(device, { departments: ['Sales'] }, []))
  t.is(normalizeDepartment(' Sales / EMEA/ '), 'Sales/EMEA')
  t.false(inDepartment(undefined, 'Sales'))
})

test('a task is scheduled, running, paused or expired by its window and status', t => {
  const task = { status: 'active' as const, startAt: '2026-01-01T10:00:00Z', validUntil: '2026-01-08T10:00:00Z' }
  t.is(phaseOf(task, Date.parse('2026-01-01T09:00:00Z')), 'scheduled')
  t.is(phaseOf(task, Date.parse('2026-01-01T10:00:00Z')), 'running')
  t.is(phaseOf({ ...task, status: 'paused' }, Date.parse('2026-01-02T00:00:00Z')), 'paused')
  t.is(phaseOf(task, Date.parse('2026-01-08T10:00:00Z')), 'expired')
  t.is(phaseOf({ ...task, status: 'cancelled' }, Date.parse('2026-01-02T00:00:00Z')), 'cancelled')
})

test('user lists read from CSV: quoted fields, any column order, devices separated by semicolons', t => {
  const csv = '\ufeffid,Department,role,name,devices\r\nalice,"Sales/EMEA",manager,"Martin, Alice",pc-01;laptop-alice\r\nbob,Engineering,,"Bob ""B"" Stone",pc-07\r\n\r\n'
  t.deepEqual(parseUsersCsv(csv), [
    { id: 'alice', department: 'Sales/EMEA', role: 'manager', displayName: 'Martin, Alice', devices: ['pc-01', 'laptop-alice'] },
    { id: 'bob', department: 'Engineering', displayName: 'Bob "B" Stone', devices: ['pc-07'] }
  ])
  t.throws(() => parseUsersCsv('id,colour\nalice,red\n'), { message: /line 1: unknown column "colour"/ })
  t.throws(() => parseUsersCsv('id,role\nalice,a,b\n'), { message: /line 2/ })
  t.throws(() => parseCsv('id\n"open'), { message: /not closed/ })
})

test('exit codes: the package mapping overrides the defaults; operators type it as CODE=OUTCOME', t => {
  const map = parseExitCodeMap(['3010=success', '5=retry,-1=failure'])
  t.deepEqual(map, { 3010: 'success', 5: 'retry', '-1': 'failure' })
  t.is(exitOutcome(3010, map), 'success')
  t.is(exitOutcome(5, map), 'retry')
  t.is(exitOutcome(1641, map), 'success-reboot-started')
  t.is(exitOutcome(2, map), 'failure')
  t.throws(() => parseExitCodeMap(['3010=maybe']), { instanceOf: SyntaxError })
})

test('VPN interfaces are recognised by name prefix from a fake interface list', t => {
  t.deepEqual(vpnInterfacesAmong(['lo', 'eth0', 'tun0', 'wg-office', 'utun3', 'docker0'], DEFAULT_VPN_INTERFACE_PREFIXES), ['tun0', 'wg-office', 'utun3'])
  t.deepEqual(vpnInterfacesAmong(['lo', 'eth0'], DEFAULT_VPN_INTERFACE_PREFIXES), [])
  t.deepEqual(vpnInterfacesAmong(['Corp-VPN', 'eth0'], ['corp-']), ['Corp-VPN'])
  let names = ['eth0', 'ppp0']
  const detector = new VpnDetector({ listInterfaces: () => names })
  t.deepEqual(detector.connected(), ['ppp0'])
  names = ['eth0']
  t.deepEqual(detector.connected(), [])
})

test('a publisher signature covers exactly the file hash and the key', t => {
  const key = generateKeyPair()
  const sha = 'ab'.repeat(32)
  const signature = signPackageHash(sha, key)
  t.notThrows(() => { verifyPackageSignature(sha, signature, key.publicKey) })
  t.is(t.throws(() => { verifyPackageSignature('cd'.repeat(32), signature, key.publicKey) })?.name, 'BadSignatureError')
  t.is(t.throws(() => { verifyPackageSignature(sha, signature, generateKeyPair().publicKey) })?.name, 'BadSignatureError')
  const flipped = { ...signature, signature: (signature.signature[0] === 'A' ? 'B' : 'A') + signature.signature.slice(1) }
  t.is(t.throws(() => { verifyPackageSignature(sha, flipped, key.publicKey) })?.name, 'BadSignatureError')
})

test('packages whose kind, platform, detection and uninstall disagree are refused', t => {
  t.notThrows(() => { checkPackageConsistency({ kind: 'msi', platform: 'windows', detection: { type: 'windows-registry', displayName: 'x' }, uninstall: { type: 'msi', productCode: '{23170F69-40C1-2702-2301-000001000000}' } }) })
  t.throws(() => { checkPackageConsistency({ kind: 'msi', platform: 'linux' }) }, { message: /runs on windows/ })
  t.throws(() => { checkPackageConsistency({ kind: 'deb', platform: 'linux', detection: { type: 'macos-bundle', bundleId: 'com.x' } }) }, { message: /detection rule is for macos/ })
  t.notThrows(() => { checkPackageConsistency({ kind: 'zip', platform: 'any', uninstall: { type: 'linux-package', manager: 'dpkg', name: 'x' } }) })
})

const chunks = ['a'.repeat(64)]
const list = { sizeBytes: 100, chunkSizeBytes: 65536, sha256: 'd'.repeat(64), chunks }
function manifest (overrides: Partial<Manifest> = {}): Manifest {
  return {
    type: 'meshdeploy.manifest',
    version: 2,
    taskId: 'task-1',
    revision: 1,
    rerun: 0,
    issuedAt: '2026-01-01T00:00:00.000Z',
    expiresAt: '2026-01-08T00:00:00.000Z',
    action: 'install',
    package: { id: packageIdOf(list), name: 'tool', version: '1', platform: 'linux', arch: 'any', kind: 'deb', fileName: 'tool.deb', ...list },
    install: { runArgs: [], timeoutSeconds: 60, detection: { type: 'linux-package', manager: 'dpkg', name: 'tool' }, exitCodes: { 3010: 'success' } },
    reboot: { policy: 'prompt', message: 'restart', deadlineSeconds: 600, forceCloseApps: true },
    conditions: { deferWhileVpn: true },
    limits: { maxAttempts: 3, retryDelaySeconds: 60 },
    ...overrides
  }
}

test('the manifest carries every setting, strictly, and says its format version', t => {
  t.notThrows(() => validateManifest(manifest()))
  t.is(t.throws(() => validateManifest({ ...manifest(), version: 3 }))?.name, 'UnsupportedVersionError')
  t.is(t.throws(() => validateManifest(manifest({ reboot: { policy: 'sometimes' as any } })))?.name, 'MalformedError')
  t.is(t.throws(() => validateManifest(manifest({ install: { runArgs: [], timeoutSeconds: 60, exitCodes: { 3010: 'fine' as any } } })))?.name, 'MalformedError')
  t.regex(t.throws(() => validateManifest(manifest({ action: 'uninstall' })))?.message ?? '', /uninstall spec/)
  t.regex(t.throws(() => validateManifest(manifest({ action: 'distribute-files' })))?.message ?? '', /destination/)
  const uninstall = manifest({ action: 'uninstall', install: { runArgs: [], timeoutSeconds: 60, uninstall: { type: 'linux-package', manager: 'dpkg', name: 'tool' } } })
  t.notThrows(() => validateManifest(uninstall))
  t.false(needsContent(uninstall), 'removing a Linux package needs no content')
  t.true(uninstallNeedsContent({ type: 'distributed-files', destination: '/opt/x' }))
  t.is(t.throws(() => validateManifest(manifest({ install: { runArgs: [], timeoutSeconds: 60, uninstall: { type: 'files', paths: ['/'] } } })))?.name, 'MalformedError', 'never the root folder')
})
