import test from 'ava'
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { chunkStream, GIB, MIB, type Chunk } from '../../protocol/index.js'

const CHUNK = 64 * 1024

function sha256 (bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

async function chunkBuffer (data: Buffer, pieceBytes = 7001): Promise<{ result: Awaited<ReturnType<typeof chunkStream>>, chunks: Chunk[] }> {
  const chunks: Chunk[] = []
  const pieces = function * () { for (let offset = 0; offset < data.byteLength; offset += pieceBytes) yield data.subarray(offset, offset + pieceBytes) }
  const result = await chunkStream(Readable.from(pieces()), { chunkSizeBytes: CHUNK, onChunk: chunk => { chunks.push({ ...chunk, bytes: Buffer.from(chunk.bytes) }) } })
  return { result, chunks }
}

test('an empty input has no chunks and the hash of nothing', async t => {
  const { result, chunks } = await chunkBuffer(Buffer.alloc(0))
  t.is(result.sizeBytes, 0)
  t.deepEqual(result.chunks, [])
  t.is(chunks.length, 0)
  t.is(result.sha256, sha256(new Uint8Array(0)))
})

test('an input of exactly one chunk is one chunk', async t => {
  const data = Buffer.alloc(CHUNK, 7)
  const { result, chunks } = await chunkBuffer(data)
  t.is(chunks.length, 1)
  t.deepEqual(result.chunks, [sha256(data)])
  t.is(result.sha256, sha256(data))
})

test('one byte over a chunk makes a second chunk of one byte', async t => {
  const data = Buffer.alloc(CHUNK + 1, 3)
  data[CHUNK] = 9
  const { result, chunks } = await chunkBuffer(data)
  t.is(chunks.length, 2)
  t.is(chunks[1].bytes.byteLength, 1)
  t.deepEqual(result.chunks, [sha256(data.subarray(0, CHUNK)), sha256(data.subarray(CHUNK))])
  t.deepEqual(chunks.map(chunk => chunk.index), [0, 1])
})

test('chunks are the same whatever the input piece sizes', async t => {
  const data = Buffer.from(Array.from({ length: 5 * CHUNK + 123 }, (_, index) => index % 251))
  const a = await chunkBuffer(data, 1)
  const b = await chunkBuffer(data, CHUNK * 3)
  t.deepEqual(a.result, b.result)
  t.is(a.result.chunks.length, 6)
})

test('input beyond the size limit fails with TooLargeError', async t => {
  const error = await t.throwsAsync(chunkStream(Readable.from([Buffer.alloc(CHUNK * 2)]), { chunkSizeBytes: CHUNK, maxSizeBytes: CHUNK, onChunk: () => {} }))
  t.is(error?.name, 'TooLargeError')
})

test('a chunk size out of bounds is refused', async t => {
  const error = await t.throwsAsync(chunkStream(Readable.from([]), { chunkSizeBytes: 100, onChunk: () => {} }))
  t.is(error?.name, 'RangeError')
})

test('three GiB stream through in constant memory', async t => {
  const block = Buffer.alloc(4 * MIB, 0x5a)
  const total = 3 * GIB
  let produced = 0
  const source = new Readable({
    read () {
      if (produced >= total) { this.push(null); return }
      produced += block.byteLength
      this.push(block)
    }
  })
  globalThis.gc?.()
  const baseline = process.memoryUsage().rss
  let peak = baseline
  let count = 0
  const result = await chunkStream(source, {
    chunkSizeBytes: MIB,
    onChunk: () => {
      count++
      if (count % 64 === 0) peak = Math.max(peak, process.memoryUsage().rss)
    }
  })
  t.is(result.sizeBytes, total)
  t.is(result.chunks.length, 3 * 1024)
  t.is(new Set(result.chunks).size, 1)
  // Leaking would grow by gigabytes; the bound leaves room for the garbage collector lagging on a loaded machine.
  t.true(peak - baseline < 192 * MIB, `memory grew by ${((peak - baseline) / MIB).toFixed(0)} MiB`)
})
