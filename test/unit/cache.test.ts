import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ChunkCache, ChunkNotCachedError } from '../../agent/cache.js'
import { assemblePackage } from '../../agent/tasks/assemble.js'
import { sha256OfFile } from '../../protocol/index.js'

const KIB = 1024

async function withCache (maxBytes: number, body: (cache: ChunkCache, root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'md-cache-'))
  let time = 0
  const cache = new ChunkCache({ root: join(root, 'cache'), maxBytes, now: () => ++time })
  await cache.open()
  try {
    await body(cache, root)
  } finally {
    await cache.enforceLimit()
    await cache.flush()
    await rm(root, { recursive: true, force: true })
  }
}

function pkg (name: string, chunkCount: number, sizeKiB = 10): { id: string, sizeBytes: number, chunkSizeBytes: number, chunks: string[], bytes: Buffer[] } {
  const bytes = Array.from({ length: chunkCount }, () => randomBytes(sizeKiB * KIB))
  return { id: createHash('sha256').update(name).digest('hex'), sizeBytes: chunkCount * sizeKiB * KIB, chunkSizeBytes: sizeKiB * KIB, chunks: bytes.map(b => createHash('sha256').update(b).digest('hex')), bytes }
}

async function store (cache: ChunkCache, p: ReturnType<typeof pkg>): Promise<void> {
  cache.register(p)
  for (const [index, bytes] of p.bytes.entries()) await cache.put(bytes, p.chunks[index])
}

test('over its bound the cache evicts the least recently used package that no task pins', async t => {
  await withCache(45 * KIB, async cache => {
    const a = pkg('a', 2)
    const b = pkg('b', 2)
    const c = pkg('c', 2)
    await store(cache, a)
    cache.pin(b, 'task-b')
    await store(cache, b)
    await store(cache, c)
    await cache.enforceLimit()
    t.false(cache.has(a.chunks[0]), 'a, the oldest unpinned, went first')
    t.true(b.chunks.every(sha => cache.has(sha)), 'b is pinned')
    t.true(c.chunks.every(sha => cache.has(sha)))
    t.is(cache.package(a.id), undefined)
    t.true(cache.stats().usedBytes <= 45 * KIB)
    t.is(cache.stats().pinnedBytes, 20 * KIB)
  })
})

test('pinned packages may exceed the bound; unpinning makes them evictable', async t => {
  await withCache(15 * KIB, async cache => {
    const a = pkg('a', 3)
    cache.pin(a, 'task')
    await store(cache, a)
    await cache.enforceLimit()
    t.true(a.chunks.every(sha => cache.has(sha)))
    cache.unpin(a.id, 'task')
    await cache.enforceLimit()
    t.is(cache.stats().usedBytes, 0)
  })
})

test('clearing removes everything no task needs, orphans included, and survives a reopen of the index', async t => {
  await withCache(1024 * KIB, async (cache, root) => {
    const kept = pkg('kept', 2)
    const gone = pkg('gone', 2)
    cache.pin(kept, 'task')
    await store(cache, kept)
    await store(cache, gone)
    const orphan = randomBytes(KIB)
    await cache.put(orphan, createHash('sha256').update(orphan).digest('hex'))
    t.is(await cache.clear(), 21 * KIB)
    t.true(kept.chunks.every(sha => cache.has(sha)))
    await cache.flush()
    const reopened = new ChunkCache({ root: join(root, 'cache') })
    await reopened.open()
    t.deepEqual(reopened.bitfield(kept.id), { chunkCount: 2, bits: Uint8Array.from([0b11000000]), held: 2 })
    t.is(reopened.package(gone.id), undefined)
  })
})

test('pieces are served from verified chunks of known packages only', async t => {
  await withCache(1024 * KIB, async cache => {
    const a = pkg('a', 2)
    await store(cache, a)
    t.deepEqual(Buffer.from(await cache.readPiece(a.id, 1, 100, 50)), a.bytes[1].subarray(100, 150))
    await t.throwsAsync(cache.readPiece('f'.repeat(64), 0, 0, 1), { instanceOf: ChunkNotCachedError })
    await t.throwsAsync(cache.readPiece(a.id, 1, 10 * KIB, 1), { instanceOf: ChunkNotCachedError })
    t.deepEqual(cache.bitfield(a.id)?.held, 2)
  })
})

test('chunks this agent hashed are served without hashing them again; after a restart the first read hashes them', async t => {
  const root = await mkdtemp(join(tmpdir(), 'md-cache-'))
  try {
    const a = pkg('a', 2)
    const first = new ChunkCache({ root: join(root, 'cache'), serveBufferBytes: 0 })
    await first.open()
    await store(first, a)
    // A bit flips on disk after the write: this process checked these bytes when it wrote them and serves them as read (the peer checks every chunk).
    const onDisk = first.content.pathOf(a.chunks[0])
    const flipped = Buffer.from(a.bytes[0])
    flipped[0] ^= 0xff
    await writeFile(onDisk, flipped)
    t.deepEqual(Buffer.from(await first.readPiece(a.id, 0, 0, 4)), flipped.subarray(0, 4))
    await first.flush()
    // A new process has checked nothing yet: its first read finds the damage and drops the chunk.
    const second = new ChunkCache({ root: join(root, 'cache'), serveBufferBytes: 0 })
    await second.open()
    await t.throwsAsync(second.readPiece(a.id, 0, 0, 4), { name: 'HashMismatchError' })
    t.false(second.has(a.chunks[0]))
    t.deepEqual(Buffer.from(await second.readPiece(a.id, 1, 0, 4)), a.bytes[1].subarray(0, 4))
  } finally {
    await rm(root, { recursive: true, force: true })
  }
})

test('a package file that fails its hash has every chunk checked again; those that fail are dropped to be fetched again', async t => {
  await withCache(1024 * KIB, async (cache, root) => {
    const a = pkg('a', 3)
    await store(cache, a)
    const flipped = Buffer.from(a.bytes[1])
    flipped[7] ^= 0x01
    await writeFile(cache.content.pathOf(a.chunks[1]), flipped)
    const manifestPackage = { id: a.id, sizeBytes: a.sizeBytes, chunkSizeBytes: a.chunkSizeBytes, chunks: a.chunks, fileName: 'a.bin', sha256: createHash('sha256').update(Buffer.concat(a.bytes)).digest('hex') }
    const work = join(root, 'work')
    await mkdir(work)
    const error = await t.throwsAsync(assemblePackage(manifestPackage as any, cache, work))
    t.is(error?.name, 'CachedChunksCorruptError')
    t.deepEqual((error as any).chunks, [a.chunks[1]])
    t.is((error as any).cause?.name, 'HashMismatchError')
    t.deepEqual(a.chunks.map(sha => cache.has(sha)), [true, false, true], 'only the damaged chunk goes')
    t.deepEqual(await readdir(work), [], 'nothing partial is left')
    await cache.put(a.bytes[1], a.chunks[1])
    t.is(await sha256OfFile(await assemblePackage(manifestPackage as any, cache, work)), manifestPackage.sha256)
  })
})
