import test from 'ava'
import { BufferPool } from '../../agent/download/buffer-pool.js'

test('a released buffer is handed out again, in its size class, as a view of the length asked for', t => {
  const pool = new BufferPool({ minBufferBytes: 1024, maxFreeBytes: 64 * 1024 })
  const first = pool.acquire(1000)
  t.is(first.byteLength, 1000)
  t.is(first.buffer.byteLength, 1024)
  first.fill(7)
  pool.release(first)
  t.is(pool.freeBufferBytes, 1024)
  const second = pool.acquire(900)
  t.is(second.buffer, first.buffer, 'the same memory, not a new allocation')
  t.is(second.byteLength, 900)
  t.is(pool.allocations, 1)
  t.is(pool.freeBufferBytes, 0)
  const larger = pool.acquire(3000)
  t.is(larger.buffer.byteLength, 4096)
  t.is(pool.allocations, 2)
})

test('a view of a pooled buffer releases the whole buffer; a foreign buffer is ignored', t => {
  const pool = new BufferPool({ minBufferBytes: 1024 })
  const bytes = pool.acquire(2048)
  pool.release(bytes.subarray(100, 200))
  t.is(pool.freeBufferBytes, 2048)
  pool.release(Buffer.alloc(2048))
  t.is(pool.freeBufferBytes, 2048)
  t.false(pool.owns(Buffer.alloc(10)))
})

test('releasing a buffer twice is a named error', t => {
  const pool = new BufferPool({ minBufferBytes: 1024 })
  const bytes = pool.acquire(1024)
  pool.release(bytes)
  t.throws(() => { pool.release(bytes) }, { name: 'BufferReleasedTwiceError' })
})

test('free buffers beyond the bound are left to the collector; requests over the largest class are not pooled', t => {
  const pool = new BufferPool({ minBufferBytes: 1024, maxFreeBytes: 2048, maxBufferBytes: 4096 })
  const buffers = [pool.acquire(1024), pool.acquire(1024), pool.acquire(1024)]
  for (const bytes of buffers) pool.release(bytes)
  t.is(pool.freeBufferBytes, 2048)
  t.false(pool.owns(buffers[2]), 'the one over the bound is forgotten')
  pool.release(buffers[2])
  t.is(pool.freeBufferBytes, 2048)
  const huge = pool.acquire(8192)
  t.false(pool.owns(huge))
})

test('a negative or fractional length is refused', t => {
  const pool = new BufferPool()
  t.throws(() => pool.acquire(-1), { instanceOf: RangeError })
  t.throws(() => pool.acquire(1.5), { instanceOf: RangeError })
})

test('the cache gives a stored chunk\'s buffer back only once it is out of memory and no answer holds it', async t => {
  const { mkdtemp, rm } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { createHash, randomBytes } = await import('node:crypto')
  const { ChunkCache } = await import('../../agent/cache.js')
  const root = await mkdtemp(join(tmpdir(), 'md-pool-'))
  try {
    const pool = new BufferPool({ minBufferBytes: 1024 })
    const cache = new ChunkCache({ root: join(root, 'cache'), serveBufferBytes: 1024, buffers: pool })
    await cache.open()
    const chunk = (): { bytes: Buffer, sha256: string } => {
      const bytes = pool.acquire(1024)
      randomBytes(1024).copy(bytes)
      return { bytes, sha256: createHash('sha256').update(bytes).digest('hex') }
    }
    const a = chunk()
    const aContent = Buffer.from(a.bytes)
    await cache.put(a.bytes, a.sha256, { hashedByCaller: true, pooled: true })
    cache.register({ id: 'p', sizeBytes: 1024, chunkSizeBytes: 1024, chunks: [a.sha256] })
    t.is(pool.freeBufferBytes, 0, 'kept in memory to serve peers')
    const piece = await cache.readPiece('p', 0, 0, 512)
    const b = chunk()
    await cache.put(b.bytes, b.sha256, { hashedByCaller: true, pooled: true })
    t.is(pool.freeBufferBytes, 0, 'evicted from memory, but an answer still holds it')
    cache.returnPiece(piece)
    t.is(pool.freeBufferBytes, 1024, 'back in the pool once the answer is done')
    const again = chunk()
    t.is(again.bytes.buffer, a.bytes.buffer)
    // A chunk already stored: the buffer goes straight back.
    await cache.put(again.bytes, b.sha256, { hashedByCaller: true, pooled: true })
    t.is(pool.freeBufferBytes, 1024)
    const assembled = Buffer.alloc(1024)
    t.deepEqual(Buffer.from(await cache.readInto(a.sha256, assembled)), aContent, 'the chunk on disk is whole, whatever became of its buffer')
  } finally {
    await rm(root, { recursive: true, force: true })
  }
})
