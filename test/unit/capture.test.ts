import test from 'ava'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { access, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { diffCapture, finishCapture, summarizeCapturePackage } from '../../coordinator/capture/package.js'
import { readSnapshot } from '../../coordinator/capture/snapshot.js'
import { sniffPackageType } from '../../coordinator/packages/sniff.js'
import { installCapture, undoCapture, CAPTURES_FOLDER } from '../../agent/install/capture/index.js'
import { deviceFacts } from '../../agent/install/capture/device.js'
import type { InstallContext } from '../../agent/install/installer.js'
import { CAPTURE_FORMAT, type CaptureChange, type Manifest } from '../../protocol/index.js'
import { tempFolder } from '../helpers/temp.js'
import { captureTool, installOnReference, LARGE_LIBRARY, startCapture, treeState, withSource, writeBeforeTree } from '../helpers/capture.js'
import { makeTarGz } from '../helpers/archives.js'

const run = promisify(execFile)

function manifestOf (packageId: string): Manifest {
  return { taskId: 'task-capture', package: { id: packageId, name: 'tool', version: '2.0' } } as unknown as Manifest
}

async function device (folder: string, name: string): Promise<InstallContext & { root: string }> {
  const root = join(folder, name, 'root')
  await writeBeforeTree(root)
  const workDir = join(folder, name, 'data', 'work', 'task-capture')
  await mkdir(workDir, { recursive: true })
  return { root, installRoot: root, packageRoot: root, workDir, dataDir: join(folder, name, 'data') }
}

async function exists (path: string): Promise<boolean> {
  return await access(path).then(() => true, () => false)
}

/** The reference's tree as a device should end up: without what the capture leaves out. */
async function expectedTree (reference: string): Promise<Record<string, string>> {
  const state = await treeState(reference)
  delete state['/opt/tool/.notes.swp']
  return state
}

test('a capture of an install lists the files added, changed and removed, the link and the permission change', async t => {
  const folder = await tempFolder(t, 'md-capture-diff-')
  const reference = join(folder, 'reference')
  await writeBeforeTree(reference)
  const statePath = join(folder, 'state')
  await startCapture(reference, statePath)
  await installOnReference(reference)
  const diff = await diffCapture(await readSnapshot(statePath))
  const changes: CaptureChange[] = []
  for await (const change of diff.changes) changes.push(change)
  t.deepEqual(changes.map(change => `${change.op} ${change.type} ${change.path}`), [
    'modify file /etc/tool/tool.conf',
    'remove file /etc/tool/unused.conf',
    'add file /opt/tool/VERSION',
    'add symlink /opt/tool/bin/current',
    'add file /opt/tool/bin/tool2',
    'add file /opt/tool/lib/libnew.so',
    'add dir /opt/tool/plugins',
    'add file /opt/tool/plugins/extra.so',
    'metadata file /opt/tool/share/doc/README'
  ], 'the editor scratch file is left out by the default excludes')
  const byPath = new Map(changes.map(change => [change.path, change]))
  t.is(byPath.get('/opt/tool/bin/current')?.target, 'tool2')
  t.is(byPath.get('/opt/tool/share/doc/README')?.mode, 0o600)
  t.is(byPath.get('/opt/tool/plugins')?.mode, 0o750)
  t.is(byPath.get('/opt/tool/lib/libnew.so')?.size, LARGE_LIBRARY.byteLength)
  t.is(typeof byPath.get('/etc/tool/tool.conf')?.previousSha256, 'string')
  t.deepEqual(diff.required, [])

  const out = join(folder, 'tool.tar.gz')
  const result = await finishCapture({ statePath, name: 'tool', version: '2.0', out })
  t.deepEqual(result.header.counts, { added: 6, modified: 1, removed: 1, metadata: 1, contentBytes: 4 + 22 + LARGE_LIBRARY.byteLength + 6 + 17, requiredPackages: 0 })
  t.true(result.packageBytes < LARGE_LIBRARY.byteLength + 4096, 'the package holds the changed files, not the roots')
  const summary = await summarizeCapturePackage(out)
  t.deepEqual(summary.removals, ['/etc/tool/unused.conf'])
  t.deepEqual(summary.topFolders.map(folder => folder.folder), ['/opt/tool', '/etc/tool'])
  const sniffed = sniffPackageType(await readFile(out), 'tool.tar.gz')
  const facts = await deviceFacts()
  t.deepEqual(sniffed, { kind: 'capture', platform: 'linux', arch: facts.arch })
})

test('a capture package makes each device\'s tree the reference\'s, byte for byte and mode for mode; uninstall puts back the tree before', async t => {
  const folder = await tempFolder(t, 'md-capture-apply-')
  const tool = await captureTool(folder)
  const pc = await device(folder, 'pc')
  const before = await treeState(pc.root)
  const manifest = manifestOf('1'.repeat(64))
  const outcome = await installCapture(manifest, tool.packageFile, pc)
  t.is(outcome.outcome, 'success')
  t.regex(outcome.message, /6 added, 1 modified, 1 removed, 1 mode\/owner/)
  t.deepEqual(await treeState(pc.root), await expectedTree(tool.reference))
  t.true(await exists(join(pc.dataDir!, CAPTURES_FOLDER, '1'.repeat(64), 'journal.json')), 'the undo journal stays in the data folder')

  const again = await installCapture(manifest, tool.packageFile, pc)
  t.regex(again.message, /already applied/)

  const undone = await undoCapture(manifest, pc)
  t.regex(undone.message, /undid tool 2\.0: \d+ path\(s\) put back/)
  t.deepEqual(await treeState(pc.root), before)
  t.false(await exists(join(pc.dataDir!, CAPTURES_FOLDER, '1'.repeat(64))))
  t.regex((await undoCapture(manifest, pc)).message, /nothing to undo/)
})

// Mounting a tmpfs needs root: CI runs as root, so there the test always runs (and fails if it cannot mount).
const asRootTest = process.getuid?.() === 0 || process.env.CI === 'true' ? test : test.skip

asRootTest('a package whose fourth file cannot be written (a full file system) is rolled back: every hash as before', async t => {
  const folder = await tempFolder(t, 'md-capture-full-')
  const tool = await captureTool(folder)
  const pc = await device(folder, 'pc')
  const lib = join(pc.root, 'opt/tool/lib')
  await rm(lib, { recursive: true })
  await mkdir(lib)
  // Too small for the 256 KiB library, the fourth file the package writes.
  await run('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0755', 'tmpfs', lib])
  t.teardown(async () => { await run('umount', [lib]).catch(() => {}) })
  await writeFile(join(lib, 'libold.so'), 'old library', { mode: 0o644 })
  const before = await treeState(pc.root)
  const error = await t.throwsAsync(installCapture(manifestOf('2'.repeat(64)), tool.packageFile, pc))
  t.is(error?.name, 'CaptureRolledBackError')
  t.regex(error!.message, /could not write \/opt\/tool\/lib\/libnew\.so \(.*ENOSPC.*\); every change made \(\d+ of \d+\) was undone/)
  t.deepEqual(await treeState(pc.root), before, 'the device is exactly as before')
  t.false(await exists(join(pc.dataDir!, CAPTURES_FOLDER, '2'.repeat(64))), 'no journal is left for a package that is not installed')
})

test('a package captured on another distribution or architecture is refused as not applicable, with nothing written', async t => {
  const folder = await tempFolder(t, 'md-capture-other-')
  const tool = await captureTool(folder)
  const pc = await device(folder, 'pc')
  const before = await treeState(pc.root)
  const facts = await deviceFacts()
  const cases = [
    { source: { distribution: 'rocky', family: 'rhel', distributionVersion: '9' }, reason: /captured on rocky 9 \(rhel family\); this device runs/ },
    { source: { arch: facts.arch === 'arm64' ? 'x64' as const : 'arm64' as const }, reason: /captured on (arm64|x64); this device is/ }
  ]
  for (const [index, { source, reason }] of cases.entries()) {
    const state = join(folder, `other-${index}.state`)
    await writeBeforeTree(join(folder, `other-${index}`))
    await startCapture(join(folder, `other-${index}`), state)
    await installOnReference(join(folder, `other-${index}`))
    await withSource(state, `${state}.edited`, source)
    const out = join(folder, `other-${index}.tar.gz`)
    await finishCapture({ statePath: `${state}.edited`, name: 'tool', version: '2.0', out })
    const error = await t.throwsAsync(installCapture(manifestOf(String(index + 3).repeat(64)), out, pc))
    t.is(error?.name, 'NotApplicableError')
    t.regex(error!.message, reason)
  }
  t.deepEqual(await treeState(pc.root), before)
  t.false(await exists(join(pc.dataDir!, CAPTURES_FOLDER)))
})

function craftedPackage (changes: object[], contents: Array<{ name: string, content: string }>, roots = ['/opt']): Buffer {
  const header = {
    format: CAPTURE_FORMAT,
    formatVersion: 1,
    name: 'evil',
    version: '1',
    createdAt: new Date().toISOString(),
    source: { os: 'linux', distribution: 'debian', family: 'debian', distributionVersion: '12', arch: 'any', packageManager: 'none' },
    roots,
    counts: { added: changes.length, modified: 0, removed: 0, metadata: 0, contentBytes: contents.reduce((sum, entry) => sum + entry.content.length, 0), requiredPackages: 0 }
  }
  return makeTarGz([
    { name: 'meshdeploy-capture.json', content: JSON.stringify(header) },
    { name: 'changes.jsonl', content: changes.map(change => JSON.stringify(change) + '\n').join('') },
    { name: 'packages.jsonl', content: '' },
    ...contents
  ])
}

test('a capture package escaping its root (by its paths, a link of its own or a link on the device) is refused with nothing written', async t => {
  const folder = await tempFolder(t, 'md-capture-escape-')
  const pc = await device(folder, 'pc')
  const facts = await deviceFacts()
  const outside = join(folder, 'outside')
  await mkdir(outside)
  const sha = (text: string): string => createHashHex(text)
  const file = (path: string, content: string): object => ({ op: 'add', path, type: 'file', mode: 0o644, uid: 0, gid: 0, size: content.length, sha256: sha(content) })
  const cases: Array<{ what: string, bytes: Buffer, name: string, prepare?: () => Promise<void> }> = [
    { what: 'a path climbing with ..', name: 'CapturePathError', bytes: craftedPackage([file('/opt/../etc/cron.d/evil', 'x')], [{ name: 'files/opt/../etc/cron.d/evil', content: 'x' }]) },
    { what: 'a path outside the roots', name: 'CapturePathError', bytes: craftedPackage([file('/etc/cron.d/evil', 'x')], [{ name: 'files/etc/cron.d/evil', content: 'x' }]) },
    { what: 'a content entry naming another path', name: 'MalformedCaptureError', bytes: craftedPackage([file('/opt/tool/ok', 'x')], [{ name: 'files/../../etc/evil', content: 'x' }]) },
    { what: 'a file below a link of the same package', name: 'CapturePathError', bytes: craftedPackage([{ op: 'add', path: '/opt/tool/lib2', type: 'symlink', mode: 0o777, uid: 0, gid: 0, target: outside }, file('/opt/tool/lib2/evil', 'x')], [{ name: 'files/opt/tool/lib2/evil', content: 'x' }]) },
    {
      what: 'a link on the device leading out of the root',
      name: 'CapturePathError',
      bytes: craftedPackage([file('/opt/tool/lib/evil', 'x'), file('/opt/tool/share/ok', 'y')], [{ name: 'files/opt/tool/lib/evil', content: 'x' }, { name: 'files/opt/tool/share/ok', content: 'y' }]),
      prepare: async () => {
        await rm(join(pc.root, 'opt/tool/lib'), { recursive: true })
        await symlink(outside, join(pc.root, 'opt/tool/lib'))
      }
    }
  ]
  for (const [index, { what, bytes, name, prepare }] of cases.entries()) {
    await prepare?.()
    const before = await treeState(pc.root)
    const packageFile = join(folder, `evil-${index}.tar.gz`)
    await writeFile(packageFile, bytes)
    const error = await t.throwsAsync(installCapture(manifestOf(String(index + 5).repeat(64)), packageFile, pc, { device: facts }), undefined, what)
    t.is(error?.name, name, what)
    t.deepEqual(await treeState(pc.root), before, `${what}: nothing written`)
    t.deepEqual(await treeState(outside), {}, `${what}: nothing written outside`)
  }
  t.false(await exists(join(pc.dataDir!, CAPTURES_FOLDER)))
})

function createHashHex (text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

test('an install interrupted half way is undone before it is tried again; a device lacking the system packages the change needs refuses it', async t => {
  const folder = await tempFolder(t, 'md-capture-resume-')
  const tool = await captureTool(folder)
  const pc = await device(folder, 'pc')
  const manifest = manifestOf('9'.repeat(64))
  await installCapture(manifest, tool.packageFile, pc)
  // As if the agent had stopped after the changes and before recording them done.
  const journalFile = join(pc.dataDir!, CAPTURES_FOLDER, '9'.repeat(64), 'journal.json')
  const journal = JSON.parse(await readFile(journalFile, 'utf8'))
  await writeFile(journalFile, JSON.stringify({ ...journal, state: 'applying' }))
  await writeFile(join(pc.root, 'opt/tool/VERSION'), 'half written')
  const outcome = await installCapture(manifest, tool.packageFile, pc)
  t.regex(outcome.message, /^applied tool 2\.0/)
  t.deepEqual(await treeState(pc.root), await expectedTree(tool.reference))
  t.is(JSON.parse(await readFile(journalFile, 'utf8')).state, 'applied')
  await writeFile(join(pc.root, 'opt/tool/VERSION'), 'edited after the install\n')
  t.regex((await undoCapture(manifest, pc)).message, /1 file\(s\) had changed since the install and were put back too/)

  const needy = join(folder, 'needy.tar.gz')
  await writeFile(needy, craftedPackageWith([{ manager: 'dpkg', name: 'libmeshdeploy-absent1', version: '1.0-1' }]))
  const before = await treeState(pc.root)
  const error = await t.throwsAsync(installCapture(manifestOf('a'.repeat(64)), needy, pc))
  t.is(error?.name, 'MissingSystemPackagesError')
  t.regex(error!.message, /libmeshdeploy-absent1 1\.0-1/)
  t.deepEqual(await treeState(pc.root), before)
})

function craftedPackageWith (required: object[]): Buffer {
  const content = 'x'
  const header = {
    format: CAPTURE_FORMAT,
    formatVersion: 1,
    name: 'needy',
    version: '1',
    createdAt: new Date().toISOString(),
    source: { os: 'linux', distribution: 'debian', family: 'debian', distributionVersion: '12', arch: 'any', packageManager: 'dpkg' },
    roots: ['/opt'],
    counts: { added: 1, modified: 0, removed: 0, metadata: 0, contentBytes: 1, requiredPackages: required.length }
  }
  return makeTarGz([
    { name: 'meshdeploy-capture.json', content: JSON.stringify(header) },
    { name: 'changes.jsonl', content: JSON.stringify({ op: 'add', path: '/opt/needy', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 1, sha256: createHashHex(content) }) + '\n' },
    { name: 'packages.jsonl', content: required.map(pkg => JSON.stringify(pkg) + '\n').join('') },
    { name: 'files/opt/needy', content }
  ])
}
