import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ChunkCache, ChunkNotCachedError } from '../../agent/cache.js'

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
