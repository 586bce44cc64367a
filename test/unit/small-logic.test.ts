import test from 'ava'
import { type PackageKind, type Platform, exitOutcome, generateKeyPair, isNewerRecord, openStatusRecord, sanitizeFileName, signStatusRecord, splitRunArgs, trustKeys, type StatusRecord } from '../../protocol/index.js'
import { sniffPackageType } from '../../coordinator/packages/sniff.js'
import { matchesTargets } from '../../coordinator/tasks/targets.js'
import { progressOf } from '../../coordinator/tasks/service.js'
import { parseRange } from '../../coordinator/http/routes/agents.js'
import { applicabilityProblem } from '../../agent/platform.js'
import { makeTar, makeTarGz, makeZip } from '../helpers/archives.js'

test('run arguments split like a shell would, expanding nothing', t => {
  t.deepEqual(splitRunArgs('/S /quiet'), ['/S', '/quiet'])
  t.deepEqual(splitRunArgs('--dir "C:\\Program Files\\App" --name \'a b\''), ['--dir', 'C:\\Program Files\\App', '--name', 'a b'])
  t.deepEqual(splitRunArgs('  $HOME  `id` ; rm -rf / '), ['$HOME', '`id`', ';', 'rm', '-rf', '/'])
  t.deepEqual(splitRunArgs('a\\ b ""'), ['a b', ''])
  t.deepEqual(splitRunArgs(''), [])
  t.is(t.throws(() => splitRunArgs('"open'))?.name, 'SyntaxError')
})

const cases: Array<[string, Uint8Array, string, PackageKind, Platform]> = [
  ['MSI', Buffer.from('d0cf11e0a1b11ae1000000', 'hex'), 'setup.msi', 'msi', 'windows'],
  ['PE', Buffer.concat([Buffer.from('MZ'), Buffer.alloc(100)]), 'setup.exe', 'exe', 'windows'],
  ['xar pkg', Buffer.from('xar!\u0000\u001c'), 'App.pkg', 'pkg', 'macos'],
  ['rpm', Buffer.from('edabeedb03', 'hex'), 'tool.rpm', 'rpm', 'linux'],
  ['deb', Buffer.from('!<arch>\ndebian-binary   '), 'tool.deb', 'deb', 'linux'],
  ['zip', makeZip([{ name: 'a.txt', content: 'a' }]), 'files.zip', 'zip', 'any'],
  ['tar', makeTar([{ name: 'a.txt', content: 'a' }]), 'files.tar', 'tar', 'any'],
  ['tar.gz', makeTarGz([{ name: 'a.txt', content: 'a' }]), 'files.tgz', 'tar.gz', 'any'],
  ['shell script', Buffer.from('#!/bin/sh\necho hi\n'), 'install', 'shell', 'linux'],
  ['PowerShell with a shebang', Buffer.from('#!/usr/bin/env pwsh\nWrite-Host hi\n'), 'x', 'ps1', 'windows'],
  ['batch file', Buffer.from('@echo off\r\necho hi\r\n'), 'setup.cmd', 'bat', 'windows'],
  ['PowerShell script', Buffer.from('Write-Host "hi"\n'), 'setup.ps1', 'ps1', 'windows'],
  ['a .msi name on text', Buffer.from('just some text'), 'fake.msi', 'file', 'any'],
  ['binary data', Buffer.from([0, 1, 2, 3, 0, 9]), 'data.bin', 'file', 'any']
]
for (const [label, head, name, kind, platform] of cases) {
  test(`the kind of a ${label} comes from its content`, t => {
    const sniffed = sniffPackageType(head, name)
    t.is(sniffed.kind, kind)
    t.is(sniffed.platform, platform)
  })
}

test('a PE image tells its architecture', t => {
  const image = Buffer.alloc(0x100)
  image.write('MZ', 0)
  image.writeUInt32LE(0x80, 0x3c)
  image.write('PE\u0000\u0000', 0x80, 'latin1')
  image.writeUInt16LE(0xaa64, 0x84)
  t.is(sniffPackageType(image, 'a.exe').arch, 'arm64')
  image.writeUInt16LE(0x8664, 0x84)
  t.is(sniffPackageType(image, 'a.exe').arch, 'x64')
})

test('file names never become paths', t => {
  t.is(sanitizeFileName('../../etc/passwd'), 'passwd')
  t.is(sanitizeFileName('C:\\Windows\\evil.exe'), 'evil.exe')
  t.is(sanitizeFileName('..'), 'package')
  t.is(sanitizeFileName('a\u0000b\nc.sh'), 'abc.sh')
  t.is(sanitizeFileName(''), 'package')
})

test('targets match devices by id, host name, group, site or all; retired devices never', t => {
  const device = { id: 'dev-1', hostname: 'pc-01', groups: ['finance'], site: 'berlin', status: 'active' as const }
  t.true(matchesTargets(device, { deviceIds: ['dev-1'] }))
  t.true(matchesTargets(device, { deviceIds: ['pc-01'] }))
  t.true(matchesTargets(device, { groups: ['hr', 'finance'] }))
  t.true(matchesTargets(device, { sites: ['berlin'] }))
  t.true(matchesTargets(device, { all: true }))
  t.false(matchesTargets(device, { groups: ['hr'], sites: ['paris'] }))
  t.false(matchesTargets({ ...device, status: 'retired' }, { all: true }))
})

test('progress counts settled devices and bytes by source', t => {
  const row = (state: any, extra: object = {}): any => ({ state, bytesDone: 0, bytesTotal: 100, bytesFromPeers: 0, bytesFromOrigin: 0, ...extra })
  const progress = progressOf([
    row('succeeded', { bytesFromPeers: 75, bytesFromOrigin: 25 }),
    row('downloading', { bytesDone: 50, bytesFromOrigin: 50 }),
    row('failed', { final: true }),
    row('failed', { retryAt: 1 })
  ])
  t.is(progress.total, 4)
  t.is(progress.settled, 2)
  t.is(progress.succeeded, 1)
  t.is(progress.failed, 1)
  t.deepEqual(progress.counts, { succeeded: 1, downloading: 1, failed: 2 })
  t.is(progress.percent, Math.round(1000 * (2 + 0.45) / 4) / 10)
  t.is(progress.bytesFromPeers, 75)
  t.is(progress.bytesFromOrigin, 75)
  t.is(progress.peerShare, 0.5)
  t.is(progressOf([]).percent, 0)
})

test('byte ranges parse like HTTP servers do', t => {
  t.deepEqual(parseRange('bytes=0-99', 1000), { start: 0, end: 99 })
  t.deepEqual(parseRange('bytes=900-', 1000), { start: 900, end: 999 })
  t.deepEqual(parseRange('bytes=-100', 1000), { start: 900, end: 999 })
  t.deepEqual(parseRange('bytes=990-2000', 1000), { start: 990, end: 999 })
  t.is(parseRange('bytes=1000-', 1000), 'unsatisfiable')
  t.is(parseRange('', 1000), undefined)
  t.is(parseRange('bytes=0-1,5-6', 1000), undefined)
})

test('exit codes map to outcomes with the installer defaults', t => {
  t.is(exitOutcome(0), 'success')
  t.is(exitOutcome(1707), 'success')
  t.is(exitOutcome(3010), 'success-reboot-required')
  t.is(exitOutcome(1641), 'success-reboot-started')
  t.is(exitOutcome(1618), 'retry')
  t.is(exitOutcome(1), 'failure')
  t.is(exitOutcome(null), 'failure')
  t.is(exitOutcome(1, { 1: 'success' }), 'success')
})

test('a package for another platform or architecture is not applicable', t => {
  t.is(applicabilityProblem({ name: 'x', platform: 'any', arch: 'any' }, 'linux', 'x64'), undefined)
  t.regex(applicabilityProblem({ name: 'x', platform: 'windows', arch: 'any' }, 'linux', 'x64') ?? '', /windows package/)
  t.regex(applicabilityProblem({ name: 'x', platform: 'linux', arch: 'arm64' }, 'linux', 'x64') ?? '', /built for arm64/)
})

test('status records are signed by the device and ordered by revision, attempt and sequence', t => {
  const device = generateKeyPair()
  const record: StatusRecord = { type: 'meshdeploy.status', deviceId: 'dev-1', taskId: 'task-1', revision: 1, attempt: 1, seq: 3, state: 'downloading', at: 1, bytesTotal: 10, bytesDone: 5, bytesFromPeers: 0, bytesFromOrigin: 5 }
  const envelope = signStatusRecord(record, device)
  t.deepEqual(openStatusRecord(envelope, trustKeys(device.publicKey)).record, record)
  t.is(t.throws(() => openStatusRecord(envelope, trustKeys(generateKeyPair().publicKey)))?.name, 'UnknownKeyError')
  t.true(isNewerRecord({ revision: 2, attempt: 1, seq: 1 }, { revision: 1, attempt: 3, seq: 9 }))
  t.true(isNewerRecord({ revision: 1, attempt: 2, seq: 1 }, { revision: 1, attempt: 1, seq: 9 }))
  t.false(isNewerRecord({ revision: 1, attempt: 1, seq: 2 }, { revision: 1, attempt: 1, seq: 3 }))
})
