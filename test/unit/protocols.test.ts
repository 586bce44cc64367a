import '../../protocol/polyfill.js'
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { streamPair } from '@libp2p/utils'
import { FrameReader, FrameTooLargeError, encodeFrame, sendBytes } from '../../agent/protocols/frames.js'
import {
  HaveBatch, HaveSender, MAX_HAVES_PER_MESSAGE, MalformedHaveMessageError, decodeHaveMessage, encodeHaveMessage, readHaveMessages, type HaveMessage
} from '../../agent/protocols/have/index.js'
import {
  ChunkServer, MalformedPieceMessageError, PieceNotHeldError, PieceRefusedError, PieceStalledError, decodePieceHeader,
  decodePieceRequest, encodePieceHeader, encodePieceRequest, requestPiece, type PieceRequest
} from '../../agent/protocols/chunk/index.js'
import { TokenBucket } from '../../agent/download/token-bucket.js'

const PACKAGE = 'ab'.repeat(32)

test('have messages survive encoding; bits past the last chunk are cleared', t => {
  const table: HaveMessage[] = [
    { type: 'interested', packageId: PACKAGE, chunkCount: 10, bits: Uint8Array.from([0b10100000, 0b01000000]) },
    { type: 'bitfield', packageId: PACKAGE, chunkCount: 0, bits: new Uint8Array(0) },
    { type: 'have', packageId: PACKAGE, index: 999_999 },
    { type: 'fetching', packageId: PACKAGE, index: 0 },
    { type: 'not-interested', packageId: PACKAGE },
    { type: 'haves', packageId: PACKAGE, indices: [5, 0, 999_999] }
  ]
  for (const message of table) t.deepEqual(decodeHaveMessage(encodeHaveMessage(message)), message, message.type)
  const dirty = encodeHaveMessage({ type: 'bitfield', packageId: PACKAGE, chunkCount: 3, bits: Uint8Array.from([0xff]) })
  t.deepEqual((decodeHaveMessage(dirty) as { bits: Uint8Array }).bits, Uint8Array.from([0b11100000]))
})

test('malformed have messages are refused by name', t => {
  const valid = encodeHaveMessage({ type: 'have', packageId: PACKAGE, index: 3 })
  const cases: Array<[string, Uint8Array]> = [
    ['too short', valid.subarray(0, 20)],
    ['unknown type', Uint8Array.from([9, ...valid.subarray(1)])],
    ['index with a trailing byte', Uint8Array.from([...valid, 0])],
    ['index out of range', (() => { const copy = valid.slice(); new DataView(copy.buffer).setUint32(33, 2_000_000); return copy })()],
    ['bitfield of the wrong length', encodeHaveMessage({ type: 'bitfield', packageId: PACKAGE, chunkCount: 17, bits: new Uint8Array(2) })],
    ['haves without an index', Uint8Array.from([6, ...valid.subarray(1, 33)])],
    ['haves with a partial index', Uint8Array.from([6, ...valid.subarray(1), 0, 0])],
    ['haves index out of range', (() => { const copy = encodeHaveMessage({ type: 'haves', packageId: PACKAGE, indices: [1, 2] }); new DataView(copy.buffer).setUint32(37, 2_000_000); return copy })()],
    ['too many chunks', (() => { const copy = encodeHaveMessage({ type: 'bitfield', packageId: PACKAGE, chunkCount: 0, bits: new Uint8Array(0) }); new DataView(copy.buffer).setUint32(33, 5_000_000); return copy })()]
  ]
  for (const [what, bytes] of cases) t.throws(() => decodeHaveMessage(bytes), { instanceOf: MalformedHaveMessageError }, what)
})

test('announcements flow in order over an in-memory stream pair, and end cleanly', async t => {
  const [outbound, inbound] = await streamPair()
  const sender = new HaveSender(outbound)
  const received: HaveMessage[] = []
  const reading = readHaveMessages(inbound, message => { received.push(message) }, { signal: AbortSignal.timeout(5000) })
  const sent: HaveMessage[] = [{ type: 'interested', packageId: PACKAGE, chunkCount: 8, bits: new Uint8Array(1) }]
  for (let index = 0; index < 1000; index++) sent.push({ type: 'have', packageId: PACKAGE, index })
  for (const message of sent) sender.send(message)
  await new Promise(resolve => setTimeout(resolve, 50))
  await sender.close()
  await reading
  t.deepEqual(received, sent)
})

test('have batches: one message per package, each chunk once, a lone chunk as a plain have, split at the bound', t => {
  const batch = new HaveBatch()
  t.true(batch.empty)
  const other = 'cd'.repeat(32)
  for (const index of [3, 1, 3, 2]) batch.add(PACKAGE, index)
  batch.add(other, 7)
  t.deepEqual(batch.take(), [{ type: 'haves', packageId: PACKAGE, indices: [3, 1, 2] }, { type: 'have', packageId: other, index: 7 }])
  t.true(batch.empty)
  for (let index = 0; index < MAX_HAVES_PER_MESSAGE + 1; index++) batch.add(PACKAGE, index)
  t.deepEqual(batch.take().map(message => message.type === 'haves' ? message.indices.length : -1), [MAX_HAVES_PER_MESSAGE, 1])
})

test('batched haves: 1000 stored chunks cost one message, read back as single haves in the order sent; any other message sends the batch ahead of itself', async t => {
  const [outbound, inbound] = await streamPair()
  // A batch interval far longer than the test: only the order rule and close send the batch.
  const sender = new HaveSender(outbound, { batchMs: 60_000 })
  let wireBytes = 0
  const received: HaveMessage[] = []
  const reading = readHaveMessages(inbound, message => { received.push(message) }, { signal: AbortSignal.timeout(5000) })
  const sent: HaveMessage[] = []
  for (let index = 0; index < 1000; index++) sent.push({ type: 'have', packageId: PACKAGE, index })
  sent.push({ type: 'not-interested', packageId: PACKAGE })
  sent.push({ type: 'have', packageId: PACKAGE, index: 1000 })
  for (const message of sent) sender.send(message)
  await sender.close()
  await reading
  t.deepEqual(received, sent)
  wireBytes = encodeFrame(encodeHaveMessage({ type: 'haves', packageId: PACKAGE, indices: Array.from({ length: 1000 }, (_, i) => i) })).byteLength
  const unbatched = 1000 * encodeFrame(encodeHaveMessage({ type: 'have', packageId: PACKAGE, index: 0 })).byteLength
  t.true(wireBytes * 9 < unbatched, `${wireBytes} bytes batched against ${unbatched}`)
})

test('a frame reader refuses a frame over its bound before buffering it, and tells a clean end from a cut one', async t => {
  const [a, b] = await streamPair()
  const reader = new FrameReader(b, { maxFrameBytes: 100 })
  await sendBytes(a, encodeFrame(new Uint8Array(101)))
  await t.throwsAsync(reader.read({ signal: AbortSignal.timeout(5000) }), { instanceOf: FrameTooLargeError })

  const [c, d] = await streamPair()
  const clean = new FrameReader(d, { maxFrameBytes: 100 })
  await sendBytes(c, encodeFrame(new Uint8Array(5)))
  await c.close()
  t.is((await clean.read({ signal: AbortSignal.timeout(5000) }))?.byteLength, 5)
  t.is(await clean.read({ signal: AbortSignal.timeout(5000) }), null)

  const [e, f] = await streamPair()
  const cut = new FrameReader(f, { maxFrameBytes: 100 })
  await sendBytes(e, encodeFrame(new Uint8Array(50)).subarray(0, 20))
  await e.close()
  await t.throwsAsync(cut.read({ signal: AbortSignal.timeout(5000) }), { name: 'TruncatedFrameError' })
})

test('piece requests and answer headers encode exactly and are checked', t => {
  const request: PieceRequest = { packageId: PACKAGE, index: 7, offsetBytes: 65536, lengthBytes: 4096 }
  t.deepEqual(decodePieceRequest(encodePieceRequest(request)), request)
  t.throws(() => decodePieceRequest(encodePieceRequest({ ...request, lengthBytes: 0 })), { instanceOf: MalformedPieceMessageError })
  t.throws(() => decodePieceRequest(encodePieceRequest({ ...request, lengthBytes: 2 * 1024 * 1024 })), { instanceOf: MalformedPieceMessageError })
  t.throws(() => decodePieceRequest(new Uint8Array(10)), { instanceOf: MalformedPieceMessageError })
  t.deepEqual(decodePieceHeader(encodePieceHeader('busy', 0)), { status: 'busy', lengthBytes: 0 })
  t.throws(() => decodePieceHeader(Uint8Array.from([42, 0, 0, 0, 0])), { instanceOf: MalformedPieceMessageError })
})

function sourceOf (chunk: Uint8Array) {
  return {
    readPiece: async (request: PieceRequest): Promise<Uint8Array> => {
      if (request.packageId !== PACKAGE || request.index !== 0) throw new PieceNotHeldError('not here')
      return chunk.subarray(request.offsetBytes, request.offsetBytes + request.lengthBytes)
    }
  }
}

async function ask (server: ChunkServer, request: PieceRequest, idleTimeoutMs?: number): Promise<Uint8Array> {
  const [client, remote] = await streamPair()
  void server.handle(remote, 'peer-a')
  return await requestPiece(client, request, { signal: AbortSignal.timeout(10_000), ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}) })
}

test('a served piece arrives whole; what is not held is refused by status', async t => {
  const chunk = randomBytes(700 * 1024)
  const server = new ChunkServer({ source: sourceOf(chunk) })
  t.deepEqual(Buffer.from(await ask(server, { packageId: PACKAGE, index: 0, offsetBytes: 0, lengthBytes: chunk.byteLength })), chunk)
  t.deepEqual(Buffer.from(await ask(server, { packageId: PACKAGE, index: 0, offsetBytes: 1000, lengthBytes: 10 })), chunk.subarray(1000, 1010))
  const refused = await t.throwsAsync(ask(server, { packageId: PACKAGE, index: 1, offsetBytes: 0, lengthBytes: 10 }), { instanceOf: PieceRefusedError })
  t.is(refused?.status, 'not-cached')
  const banned = new ChunkServer({ source: sourceOf(chunk), mayServe: () => false })
  t.is((await t.throwsAsync(ask(banned, { packageId: PACKAGE, index: 0, offsetBytes: 0, lengthBytes: 10 }), { instanceOf: PieceRefusedError }))?.status, 'refused')
  const full = new ChunkServer({ source: sourceOf(chunk), maxConcurrentUploads: 0 })
  t.is((await t.throwsAsync(ask(full, { packageId: PACKAGE, index: 0, offsetBytes: 0, lengthBytes: 10 }), { instanceOf: PieceRefusedError }))?.status, 'busy')
  // The server finishes its side (the stream's close) shortly after the requester has every byte.
  for (let wait = 0; wait < 100 && server.activeUploads > 0; wait++) await new Promise(resolve => setTimeout(resolve, 20))
  t.is(server.activeUploads, 0)
})

test('with an upload cap no data frame is larger than the bucket burst', async t => {
  const chunk = randomBytes(256 * 1024)
  const bucket = new TokenBucket({ bytesPerSecond: 100 * 1024 * 1024 })
  const server = new ChunkServer({ source: sourceOf(chunk), uploadBucket: bucket })
  const [client, remote] = await streamPair()
  void server.handle(remote, 'peer-a')
  await sendBytes(client, encodeFrame(encodePieceRequest({ packageId: PACKAGE, index: 0, offsetBytes: 0, lengthBytes: chunk.byteLength })))
  await client.close()
  const reader = new FrameReader(client, { maxFrameBytes: 1024 * 1024 })
  const header = decodePieceHeader((await reader.read({ signal: AbortSignal.timeout(5000) }))!)
  t.is(header.lengthBytes, chunk.byteLength)
  const sizes: number[] = []
  for (let frame = await reader.read({ signal: AbortSignal.timeout(5000) }); frame !== null; frame = await reader.read({ signal: AbortSignal.timeout(5000) })) sizes.push(frame.byteLength)
  t.is(sizes.reduce((a, b) => a + b, 0), chunk.byteLength)
  t.true(sizes.every(size => size <= bucket.pieceBytes), `frames ${sizes.join(',')}`)
})

test('a peer that answers short, long or not at all costs only that request, with a named error', async t => {
  const request: PieceRequest = { packageId: PACKAGE, index: 0, offsetBytes: 0, lengthBytes: 1000 }
  const liar = async (answer: (stream: Awaited<ReturnType<typeof streamPair>>[1]) => Promise<void>, idleTimeoutMs?: number): Promise<unknown> => {
    const [client, remote] = await streamPair()
    void answer(remote)
    return await requestPiece(client, request, { signal: AbortSignal.timeout(10_000), ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}) })
  }
  await t.throwsAsync(liar(async stream => {
    await sendBytes(stream, encodeFrame(encodePieceHeader('ok', 1000)))
    await sendBytes(stream, encodeFrame(new Uint8Array(400)))
    await stream.close()
  }), { instanceOf: MalformedPieceMessageError, message: /after 400 of 1000/ })
  await t.throwsAsync(liar(async stream => {
    await sendBytes(stream, encodeFrame(encodePieceHeader('ok', 1000)))
    await sendBytes(stream, encodeFrame(new Uint8Array(1200)))
  }), { instanceOf: MalformedPieceMessageError, message: /more than/ })
  await t.throwsAsync(liar(async stream => {
    await sendBytes(stream, encodeFrame(encodePieceHeader('ok', 999)))
  }), { instanceOf: MalformedPieceMessageError, message: /announced 999/ })
  await t.throwsAsync(liar(async () => {}, 200), { instanceOf: PieceStalledError })
})
