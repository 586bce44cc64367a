import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { CoordinatorUnreachableError } from '../../agent/errors.js'
import { OriginSource, type ChunkRequest } from '../../agent/download/origin-source.js'
import { OriginLanes } from '../../agent/download/origin-lanes.js'
import type { CoordinatorClient } from '../../agent/coordinator-client.js'

interface Asked { start: number, end: number }

/**
 * An origin holding one chunk that cuts its answers where the test says:
 * `cuts` lists, per request, after how many bytes the connection drops
 * (undefined: the answer completes).
 */
function origin (content: Buffer, cuts: Array<number | undefined>, pieceBytes = 4096): { client: CoordinatorClient, asked: Asked[], sent: () => number } {
  const asked: Asked[] = []
  let sent = 0
  const client = {
    fetchContent: async (_sha256: string, range: { start: number, end: number } | undefined, maxBytes: number, options: { onData?: (bytes: number) => void, into?: Uint8Array }) => {
      const start = range?.start ?? 0
      const end = range?.end ?? content.byteLength
      asked.push({ start, end })
      if (end - start > maxBytes) throw new Error('asked for more than allowed')
      const cut = cuts[asked.length - 1]
      let at = 0
      while (start + at < end) {
        if (cut !== undefined && at >= cut) throw new CoordinatorUnreachableError('the coordinator closed the answer')
        const piece = content.subarray(start + at, Math.min(end, start + at + pieceBytes, cut !== undefined ? start + cut : end))
        options.into!.set(piece, at)
        at += piece.byteLength
        sent += piece.byteLength
        options.onData?.(piece.byteLength)
        await Promise.resolve()
      }
      return Buffer.from(options.into!.buffer, options.into!.byteOffset, at)
    }
  } as unknown as CoordinatorClient
  return { client, asked, sent: () => sent }
}

function chunkOf (content: Buffer): ChunkRequest {
  return { index: 3, sha256: createHash('sha256').update(content).digest('hex'), lengthBytes: content.byteLength }
}

test('an answer cut short is resumed from its first missing byte: every byte crosses once', async t => {
  const content = randomBytes(64 * 1024)
  const { client, asked, sent } = origin(content, [20_000, 30_000, undefined])
  const source = new OriginSource(client, { lanes: false })
  const bytes = await source.fetchChunk(chunkOf(content), { signal: AbortSignal.timeout(5000) })
  t.true(bytes.equals(content))
  t.deepEqual(asked, [{ start: 0, end: 65_536 }, { start: 20_000, end: 65_536 }, { start: 50_000, end: 65_536 }])
  t.is(sent(), content.byteLength)
  t.is(source.stats.resumed, 2)
})

test('a fetch that fails keeps what it received: the next fetch of the chunk asks only for the rest', async t => {
  const content = randomBytes(64 * 1024)
  // Cut at 16 KiB, then the origin is out of reach (nothing arrives): the fetch fails.
  const { client, asked, sent } = origin(content, [16_384, 0, undefined])
  const source = new OriginSource(client, { lanes: false })
  const error = await t.throwsAsync(source.fetchChunk(chunkOf(content), { signal: AbortSignal.timeout(5000) }))
  t.is(error?.name, 'CoordinatorUnreachableError')
  t.is(source.partialBytesKept, 16_384)
  const bytes = await source.fetchChunk(chunkOf(content), { signal: AbortSignal.timeout(5000) })
  t.true(bytes.equals(content))
  t.deepEqual(asked.at(-1), { start: 16_384, end: 65_536 })
  t.is(sent(), content.byteLength)
  t.is(source.stats.resumedFromPartial, 1)
  t.is(source.partialBytesKept, 0)
})

test('resumes are bounded: an origin that cuts every answer fails the fetch', async t => {
  const content = randomBytes(64 * 1024)
  const { client, asked } = origin(content, Array.from({ length: 20 }, () => 4096))
  const source = new OriginSource(client, { lanes: false, resumesPerFetch: 3 })
  await t.throwsAsync(source.fetchChunk(chunkOf(content), { signal: AbortSignal.timeout(5000) }), { name: 'CoordinatorUnreachableError' })
  t.is(asked.length, 4)
})

test('a resumed chunk that fails its hash is dropped and fetched whole', async t => {
  const content = randomBytes(32 * 1024)
  const wrong = Buffer.from(content)
  wrong[100] ^= 0xff
  const request = chunkOf(content)
  const bad = origin(wrong, [8192, 0])
  const source = new OriginSource(bad.client, { lanes: false })
  await t.throwsAsync(source.fetchChunk(request, { signal: AbortSignal.timeout(5000) }))
  t.is(source.partialBytesKept, 8192)
  // The kept part came from a damaged answer: the resumed chunk fails its hash and nothing of it is kept.
  const good = origin(content, [undefined, undefined])
  ;(source as any).client = good.client
  await t.throwsAsync(source.fetchChunk(request, { signal: AbortSignal.timeout(5000) }), { name: 'HashMismatchError' })
  t.is(source.partialBytesKept, 0)
  t.true((await source.fetchChunk(request, { signal: AbortSignal.timeout(5000) })).equals(content))
  t.deepEqual(good.asked.at(-1), { start: 0, end: 32_768 })
})

test('kept parts are bounded in count and bytes, the oldest forgotten first', async t => {
  const chunks = Array.from({ length: 4 }, () => randomBytes(16 * 1024))
  const source = new OriginSource(origin(chunks[0], []).client, { lanes: false, maxPartialChunks: 2, maxPartialBytes: 1 << 20 })
  for (const content of chunks) {
    ;(source as any).client = origin(content, [4096, 0]).client
    await t.throwsAsync(source.fetchChunk(chunkOf(content), { signal: AbortSignal.timeout(5000) }))
  }
  t.is(source.partialBytesKept, 2 * 4096)
  const last = origin(chunks[0], [undefined])
  ;(source as any).client = last.client
  await source.fetchChunk(chunkOf(chunks[0]), { signal: AbortSignal.timeout(5000) })
  t.deepEqual(last.asked, [{ start: 0, end: 16_384 }], 'the oldest kept part was forgotten')
})

test('lanes: one chunk streams at a time; the next starts when the current one has its overlap left', async t => {
  const lanes = new OriginLanes({ streams: 1, overlapBytes: 100 })
  const signal = AbortSignal.timeout(5000)
  const first = await lanes.acquire(signal)
  let secondGranted = false
  const second = lanes.acquire(signal).then(lane => { secondGranted = true; return lane })
  const third = lanes.acquire(signal)
  await Promise.resolve()
  t.false(secondGranted)
  t.is(lanes.queued, 2)
  first.remaining(500, 10_000)
  await Promise.resolve()
  t.false(secondGranted, 'more than the overlap left: the lane is held')
  first.remaining(200, 400)
  await Promise.resolve()
  t.false(secondGranted, 'more than a quarter of the chunk left: the lane is held')
  first.remaining(100, 10_000)
  const lane = await second
  t.true(secondGranted)
  t.is(lanes.queued, 1)
  first.release()
  t.is(lanes.streaming, 1, 'a lane freed early is not freed twice')
  lane.release()
  ;(await third).release()
  t.is(lanes.streaming, 0)
})

test('lanes: an aborted wait leaves the queue', async t => {
  const lanes = new OriginLanes({ streams: 1 })
  const held = await lanes.acquire(AbortSignal.timeout(5000))
  const controller = new AbortController()
  const waiting = lanes.acquire(controller.signal)
  controller.abort(new Error('stopped'))
  await t.throwsAsync(waiting, { message: 'stopped' })
  t.is(lanes.queued, 0)
  held.release()
  t.is(lanes.streaming, 0)
})

test('with lanes, concurrent fetches of an agent stream one after another', async t => {
  const chunks = Array.from({ length: 3 }, () => randomBytes(64 * 1024))
  let streaming = 0
  let most = 0
  const client = {
    fetchContent: async (sha256: string, _range: unknown, _maxBytes: number, options: { onData?: (bytes: number) => void, into?: Uint8Array }) => {
      const content = chunks.find(chunk => chunkOf(chunk).sha256 === sha256)!
      streaming++
      most = Math.max(most, streaming)
      for (let at = 0; at < content.byteLength; at += 8192) {
        options.into!.set(content.subarray(at, at + 8192), at)
        // Streaming while bytes are still to come.
        if (at + 8192 >= content.byteLength) streaming--
        options.onData?.(8192)
        await new Promise(resolve => setImmediate(resolve))
      }
      return Buffer.from(options.into!.buffer, options.into!.byteOffset, content.byteLength)
    }
  } as unknown as CoordinatorClient
  const source = new OriginSource(client, { lanes: { streams: 1, overlapBytes: 0 } })
  const fetched = await Promise.all(chunks.map(async chunk => await source.fetchChunk(chunkOf(chunk), { signal: AbortSignal.timeout(5000) })))
  t.true(fetched.every((bytes, index) => bytes.equals(chunks[index])))
  t.is(most, 1)
})
