import test, { type ExecutionContext } from 'ava'
import { tempFolder } from '../helpers/temp.js'
import { readdir, readFile, writeFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { extractArchive } from '../../agent/install/archive.js'
import { makeTar, makeTarGz, makeZip, type TarEntry } from '../helpers/archives.js'

async function folder (t: ExecutionContext): Promise<string> {
  return await tempFolder(t, 'md-archive-')
}

async function tarFile (t: ExecutionContext, entries: TarEntry[], gz = false): Promise<string> {
  const dir = await folder(t)
  const file = join(dir, gz ? 'a.tar.gz' : 'a.tar')
  await writeFile(file, gz ? makeTarGz(entries) : makeTar(entries))
  return file
}

test('a tar.gz extracts files, folders and inside links', async t => {
  const file = await tarFile(t, [
    { name: 'app/', type: '5', mode: 0o755 },
    { name: 'app/bin.sh', content: '#!/bin/sh\necho hi\n', mode: 0o755 },
    { name: 'app/current', type: '2', linkName: 'bin.sh' }
  ], true)
  const destination = join(await folder(t), 'dest')
  const { entries } = await extractArchive(file, 'tar.gz', destination)
  t.is(entries, 3)
  t.is(await readFile(join(destination, 'app/bin.sh'), 'utf8'), '#!/bin/sh\necho hi\n')
  t.is(await readlink(join(destination, 'app/current')), 'bin.sh')
})

const escapes: Array<[string, TarEntry[]]> = [
  ['a ../ path', [{ name: '../evil.txt', content: 'x' }]],
  ['a nested ../ path', [{ name: 'a/../../evil.txt', content: 'x' }]],
  ['an absolute path', [{ name: '/tmp/evil.txt', content: 'x' }]],
  ['a symlink to an absolute path', [{ name: 'link', type: '2', linkName: '/etc' }]],
  ['a symlink that climbs out', [{ name: 'a/link', type: '2', linkName: '../../etc' }]],
  ['a hard link out', [{ name: 'hard', type: '1', linkName: '../outside' }]]
]

for (const [label, entries] of escapes) {
  test(`a tar with ${label} is refused whole and writes nothing`, async t => {
    const file = await tarFile(t, [{ name: 'good.txt', content: 'fine' }, ...entries])
    const parent = await folder(t)
    const destination = join(parent, 'dest')
    const error = await t.throwsAsync(extractArchive(file, 'tar', destination))
    t.is(error?.name, 'PathEscapeError')
    t.deepEqual(await readdir(parent), [])
  })
}

test('a device file or FIFO in a tar is refused', async t => {
  for (const type of ['3', '6'] as const) {
    const file = await tarFile(t, [{ name: 'dev', type }])
    const error = await t.throwsAsync(extractArchive(file, 'tar', join(await folder(t), 'dest')))
    t.is(error?.name, 'UnsupportedEntryError')
  }
})

test('a truncated tar.gz is refused as corrupt', async t => {
  const dir = await folder(t)
  const file = join(dir, 'a.tar.gz')
  const whole = makeTarGz([{ name: 'big.bin', content: Buffer.alloc(200_000, 1) }])
  await writeFile(file, whole.subarray(0, whole.byteLength >> 1))
  const error = await t.throwsAsync(extractArchive(file, 'tar.gz', join(dir, 'dest')))
  t.is(error?.name, 'CorruptArchiveError')
})

test('a zip extracts files into folders', async t => {
  const dir = await folder(t)
  const file = join(dir, 'a.zip')
  await writeFile(file, makeZip([{ name: 'docs/readme.txt', content: 'hello' }, { name: 'top.txt', content: 'top' }]))
  const destination = join(dir, 'dest')
  await extractArchive(file, 'zip', destination)
  t.is(await readFile(join(destination, 'docs/readme.txt'), 'utf8'), 'hello')
  t.is(await readFile(join(destination, 'top.txt'), 'utf8'), 'top')
})

for (const [label, name, mode] of [['a ../ name', '../evil.txt', undefined], ['an absolute name', '/evil.txt', undefined], ['a symbolic link', 'link', 0o120777]] as const) {
  test(`a zip with ${label} is refused and writes nothing`, async t => {
    const dir = await folder(t)
    const file = join(dir, 'a.zip')
    await writeFile(file, makeZip([{ name: 'ok.txt', content: 'ok' }, { name, content: '/etc/passwd', ...(mode !== undefined ? { unixMode: mode } : {}) }]))
    const parent = join(dir, 'out')
    const error = await t.throwsAsync(extractArchive(file, 'zip', join(parent, 'dest')))
    t.is(error?.name, mode === undefined ? 'PathEscapeError' : 'UnsupportedEntryError', error?.message)
    t.deepEqual(await readdir(dir), ['a.zip'])
  })
}
