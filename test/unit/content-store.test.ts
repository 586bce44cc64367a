import test, { type ExecutionContext } from 'ava'
import { tempFolder } from '../helpers/temp.js'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readdir, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { ContentStore } from '../../protocol/index.js'

async function store (t: ExecutionContext): Promise<ContentStore> {
  const content = new ContentStore(await tempFolder(t, 'md-content-'))
  await content.open()
  return content
}

test('content is stored under its hash and read back verified', async t => {
  const content = await store(t)
  const bytes = randomBytes(1000)
  const { sha256, created } = await content.put(bytes)
  t.true(created)
  t.is(sha256, createHash('sha256').update(bytes).digest('hex'))
  t.deepEqual(await content.get(sha256), bytes)
  t.false((await content.put(bytes)).created)
})

test('a declared hash that does not match stores nothing', async t => {
  const content = await store(t)
  const error = await t.throwsAsync(content.put(randomBytes(10), 'a'.repeat(64)))
  t.is(error?.name, 'HashMismatchError')
  t.false(await content.has('a'.repeat(64)))
  t.deepEqual(await readdir(join(content.root, 'tmp')), [])
})

test('a file damaged on disk is refused and removed on read', async t => {
  const content = await store(t)
  const { sha256 } = await content.put(randomBytes(100))
  await writeFile(content.pathOf(sha256), randomBytes(100))
  t.is((await t.throwsAsync(content.get(sha256)))?.name, 'HashMismatchError')
  t.false(await content.has(sha256))
  t.is((await t.throwsAsync(content.get(sha256)))?.name, 'ContentNotFoundError')
})

test('a write killed midway leaves nothing that looks complete', async t => {
  const root = await tempFolder(t, 'md-content-kill-')
  const module = new URL('../../protocol/content-store.ts', import.meta.url).pathname
  const script = `
    import { ContentStore } from ${JSON.stringify(module)}
    import { randomBytes } from 'node:crypto'
    const store = new ContentStore(${JSON.stringify(root)})
    await store.open()
    process.stdout.write('ready\\n')
    for (;;) await store.put(randomBytes(8 * 1024 * 1024))
  `
  const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise<void>(resolve => { child.stdout.once('data', () => { resolve() }) })
  await new Promise(resolve => setTimeout(resolve, 400))
  child.kill('SIGKILL')
  await new Promise(resolve => child.once('exit', resolve))
  const content = new ContentStore(root)
  const leftovers = await readdir(join(root, 'tmp')).catch(() => [])
  await content.open()
  t.deepEqual(await readdir(join(root, 'tmp')), [], 'open() clears interrupted writes')
  let stored = 0
  for await (const sha256 of content.list()) {
    await t.notThrowsAsync(content.get(sha256))
    stored++
  }
  t.log(`${stored} complete files, ${leftovers.length} interrupted write(s) cleared`)
  t.true(stored + leftovers.length > 0)
})

test('listing skips names that are not content', async t => {
  const content = await store(t)
  const { sha256 } = await content.put(Buffer.from('x'))
  await mkdir(join(content.root, 'zz'), { recursive: true })
  await writeFile(join(content.root, 'zz', 'notes.txt'), 'x')
  const listed = []
  for await (const name of content.list()) listed.push(name)
  t.deepEqual(listed, [sha256])
})
