import test from 'ava'
import {
  generateKeyPair, openManifest, packageIdOf, signManifest, trustKeys, validateManifest, sealEnvelope, utf8,
  MANIFEST_DOMAIN, type Manifest
} from '../../protocol/index.js'

const key = generateKeyPair()
const keys = trustKeys(key.publicKey)
const chunks = ['a'.repeat(64), 'b'.repeat(64), 'c'.repeat(64)]
const pkgBase = { sizeBytes: 3 * 1048576 - 10, chunkSizeBytes: 1048576, sha256: 'd'.repeat(64), chunks }
const NOW = Date.parse('2026-11-21T12:00:00Z')

function manifest (overrides: Partial<Manifest> = {}): Manifest {
  return {
    type: 'meshdeploy.manifest',
    version: 2,
    taskId: 'task-1',
    revision: 1,
    rerun: 0,
    issuedAt: new Date(NOW - 1000).toISOString(),
    expiresAt: new Date(NOW + 3600_000).toISOString(),
    action: 'install',
    package: { id: packageIdOf(pkgBase), name: 'tool', version: '1.0', platform: 'linux', arch: 'any', kind: 'shell', fileName: 'tool.sh', ...pkgBase },
    install: { runArgs: ['--quiet'], timeoutSeconds: 60 },
    reboot: { policy: 'never' },
    conditions: { deferWhileVpn: false },
    limits: { maxAttempts: 3, retryDelaySeconds: 60 },
    ...overrides
  }
}

test('a signed manifest opens and validates', t => {
  const opened = openManifest(signManifest(manifest(), key), { keys, now: NOW })
  t.deepEqual(opened.manifest, manifest())
})

test('an expired manifest fails with ExpiredError beyond the skew tolerance only', t => {
  const envelope = signManifest(manifest({ expiresAt: new Date(NOW - 60_000).toISOString(), issuedAt: new Date(NOW - 120_000).toISOString() }), key)
  t.is(t.throws(() => openManifest(envelope, { keys, now: NOW, clockSkewMs: 30_000 }))?.name, 'ExpiredError')
  t.notThrows(() => openManifest(envelope, { keys, now: NOW, clockSkewMs: 120_000 }))
})

test('a manifest issued in the future fails with NotYetValidError', t => {
  const envelope = signManifest(manifest({ issuedAt: new Date(NOW + 3600_000).toISOString(), expiresAt: new Date(NOW + 7200_000).toISOString() }), key)
  t.is(t.throws(() => openManifest(envelope, { keys, now: NOW }))?.name, 'NotYetValidError')
})

test('a chunk list that does not hash to the package id fails (mix and match)', t => {
  const mixed = manifest()
  mixed.package = { ...mixed.package, chunks: [chunks[0], chunks[1], 'e'.repeat(64)] }
  const error = t.throws(() => validateManifest(mixed))
  t.is(error?.name, 'MalformedError')
  t.regex(error?.message ?? '', /hashes to/)
})

test('a chunk count that does not fit the size fails', t => {
  const wrong = manifest()
  const list = { ...pkgBase, sizeBytes: 5 * 1048576 }
  wrong.package = { ...wrong.package, ...list, id: packageIdOf(list) }
  t.regex(t.throws(() => validateManifest(wrong))?.message ?? '', /expected 5 chunks/)
})

test('unknown fields, wrong types and missing fields are refused', t => {
  t.is(t.throws(() => validateManifest({ ...manifest(), surprise: true }))?.name, 'MalformedError')
  t.is(t.throws(() => validateManifest({ ...manifest(), revision: '2' }))?.name, 'MalformedError')
  const { limits, ...withoutLimits } = manifest()
  void limits
  t.is(t.throws(() => validateManifest(withoutLimits))?.name, 'MalformedError')
  t.is(t.throws(() => validateManifest({ ...manifest(), revision: 0 }))?.name, 'MalformedError')
})

test('a validly signed payload that is not a manifest is refused as malformed', t => {
  const envelope = sealEnvelope(MANIFEST_DOMAIN, utf8('{"type":"meshdeploy.manifest"}'), key)
  t.is(t.throws(() => openManifest(envelope, { keys, now: NOW }))?.name, 'MalformedError')
  const notJson = sealEnvelope(MANIFEST_DOMAIN, utf8('not json'), key)
  t.is(t.throws(() => openManifest(notJson, { keys, now: NOW }))?.name, 'MalformedError')
})

test('a manifest signed by another key fails with UnknownKeyError', t => {
  const envelope = signManifest(manifest(), generateKeyPair())
  t.is(t.throws(() => openManifest(envelope, { keys, now: NOW }))?.name, 'UnknownKeyError')
})

test('the package id changes with any part of the chunk list', t => {
  const base = packageIdOf(pkgBase)
  t.not(packageIdOf({ ...pkgBase, sizeBytes: pkgBase.sizeBytes + 1 }), base)
  t.not(packageIdOf({ ...pkgBase, chunkSizeBytes: 524288 }), base)
  t.not(packageIdOf({ ...pkgBase, sha256: 'e'.repeat(64) }), base)
  t.not(packageIdOf({ ...pkgBase, chunks: [...chunks].reverse() }), base)
  t.is(packageIdOf({ ...pkgBase }), base)
})

test('dependencies and superseded packages travel signed, and are checked like the package itself', t => {
  const depList = { sizeBytes: 1048576, chunkSizeBytes: 1048576, sha256: 'e'.repeat(64), chunks: ['f'.repeat(64)] }
  const dependency = {
    package: { id: packageIdOf(depList), name: 'runtime', version: '2.1', platform: 'linux' as const, arch: 'any' as const, kind: 'shell' as const, fileName: 'runtime.sh', ...depList },
    install: { runArgs: [], timeoutSeconds: 60, detection: { type: 'file' as const, path: '/opt/runtime/VERSION' } }
  }
  const superseded = { mode: 'replace' as const, package: { id: 'a'.repeat(64), name: 'tool', version: '0.9' }, detection: { type: 'file' as const, path: '/opt/tool-0.9' }, uninstall: { type: 'files' as const, paths: ['/opt/tool-0.9'] } }
  const full = manifest({ dependencies: [dependency], supersedes: [superseded], conditions: { deferWhileVpn: false, maintenanceWindows: 'respect' } })
  t.deepEqual(openManifest(signManifest(full, key), { keys, now: NOW }).manifest, full)

  const mixed = manifest({ dependencies: [{ ...dependency, package: { ...dependency.package, chunks: ['0'.repeat(64)] } }] })
  t.regex(t.throws(() => validateManifest(mixed))?.message ?? '', /hashes to/, 'a dependency\'s chunk list must hash to its id')
  const undetectable = manifest({ dependencies: [{ ...dependency, install: { runArgs: [], timeoutSeconds: 60 } }] })
  t.regex(t.throws(() => validateManifest(undetectable))?.message ?? '', /detection rule/)
  const { uninstall: _uninstall, ...withoutUninstall } = superseded
  t.regex(t.throws(() => validateManifest(manifest({ supersedes: [withoutUninstall] })))?.message ?? '', /uninstall spec/)
  t.regex(t.throws(() => validateManifest(manifest({ action: 'distribute-files', install: { runArgs: [], timeoutSeconds: 60, destination: '/srv' }, dependencies: [dependency] })))?.message ?? '', /only an install/)
})
