/**
 * Property-based fuzzing of the libp2p wire decoders: the length-prefixed
 * frame decoder, the have/interest and chunk message decoders, and a whole
 * piece request against arbitrary answers. The properties are those of the
 * envelope decoder (fuzz.test.ts): named errors only, a bounded read whatever
 * a prefix claims, and nothing returned that the bytes did not say.
 */
import '../../protocol/polyfill.js'
import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'
import { streamPair } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { FrameDecoder, FrameReader, FrameTooLargeError, TruncatedFrameError, encodeFrame, encodeVarint, sendBytes } from '../../agent/protocols/frames.js'
import {
  MAX_PIECE_BYTES, MalformedPieceMessageError, PIECE_STATUSES, decodePieceHeader, decodePieceRequest, encodePieceHeader,
  encodePieceRequest, requestPiece, type PieceRequest
} from '../../agent/protocols/chunk/index.js'
import { MalformedHaveMessageError, decodeHaveMessage, encodeHaveMessage, type HaveMessage } from '../../agent/protocols/have/index.js'
import { MAX_CHUNKS_PER_PACKAGE, MAX_CHUNK_SIZE_BYTES } from '../../protocol/index.js'

const RUNS = 400
const MAX_FRAME_BYTES = 300

function check<T> (t: ExecutionContext, property: fc.IProperty<T> | fc.IAsyncProperty<T>, parameters?: fc.Parameters<T>): Promise<void> | void {
  if (property.isAsync()) return t.notThrowsAsync(fc.assert(property as fc.IAsyncProperty<T>, parameters)).then(() => {})
  t.notThrows(() => { fc.assert(property as fc.IProperty<T>, parameters) })
}

/** Runs `decode`; a named error of the list is an outcome, anything else fails the property. */
function only<T> (names: string[], decode: () => T): T | Error {
  try {
    return decode()
  } catch (error) {
    if (error instanceof Error && names.includes(error.name)) return error
    throw new Error(`not a named error: ${String((error as Error)?.name)}: ${String((error as Error)?.message)}`)
  }
}

/** Feeds bytes to a decoder in the given pieces and collects every frame, then ends the input. */
function decodeAll (pieces: Uint8Array[], maxFrameBytes = MAX_FRAME_BYTES): { frames: Uint8Array[], decoder: FrameDecoder } {
  const decoder = new FrameDecoder({ maxFrameBytes })
  const frames: Uint8Array[] = []
  for (const piece of pieces) {
    decoder.push(piece)
    for (let frame = decoder.next(); frame !== undefined; frame = decoder.next()) frames.push(frame.subarray())
  }
  decoder.end()
  return { frames, decoder }
}

/** Splits bytes at the given cut points (any order, any count). */
function split (bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map(cut => cut % (bytes.byteLength + 1)))].sort((a, b) => a - b)
  const pieces: Uint8Array[] = []
  let start = 0
  for (const point of points) {
    pieces.push(bytes.subarray(start, point))
    start = point
  }
  pieces.push(bytes.subarray(start))
  return pieces
}

const concat = (frames: Uint8ArrayList[]): Uint8Array => new Uint8ArrayList(...frames).subarray()
const payloads = fc.array(fc.uint8Array({ maxLength: MAX_FRAME_BYTES }), { maxLength: 12 })
const cuts = fc.array(fc.nat(), { maxLength: 8 })

test('frame decoder: arbitrary bytes in arbitrary pieces throw only named errors, and no frame exceeds the bound', t => {
  check(t, fc.property(fc.uint8Array({ maxLength: 2000 }), cuts, (bytes, at) => {
    const result = only(['FrameTooLargeError', 'TruncatedFrameError'], () => decodeAll(split(bytes, at)))
    if (result instanceof Error) return true
    return result.frames.every(frame => frame.byteLength <= MAX_FRAME_BYTES) && result.decoder.bufferedBytes === 0
  }), { numRuns: RUNS * 2 })
})

test('frame decoder: whatever the pieces, encoded frames come back exactly, and the end is clean', t => {
  check(t, fc.property(payloads, cuts, (sent, at) => {
    const { frames } = decodeAll(split(concat(sent.map(payload => encodeFrame(payload))), at))
    return frames.length === sent.length && frames.every((frame, index) => Buffer.from(frame).equals(Buffer.from(sent[index])))
  }), { numRuns: RUNS })
})

test('frame decoder: a length prefix over the maximum frame size is refused before any of the frame is awaited or buffered', t => {
  check(t, fc.property(fc.integer({ min: MAX_FRAME_BYTES + 1, max: 2 ** 35 - 1 }), fc.uint8Array({ maxLength: 50 }), (claimed, tail) => {
    const prefix = encodeVarint(claimed)
    const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES })
    decoder.push(prefix)
    const refused = only(['FrameTooLargeError'], () => decoder.next())
    // A prefix of more than five bytes is refused for its length alone; otherwise it says what it claimed.
    const claimedOk = prefix.byteLength > 5 || (refused instanceof FrameTooLargeError && refused.lengthBytes === claimed)
    decoder.push(tail)
    return refused instanceof FrameTooLargeError && claimedOk && decoder.bufferedBytes === prefix.byteLength + tail.byteLength
  }), { numRuns: RUNS })
})

test('frame decoder: a prefix whose continuation bit never ends is refused after five bytes', t => {
  check(t, fc.property(fc.integer({ min: 6, max: 100 }), length => {
    const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES })
    decoder.push(new Uint8Array(length).fill(0xff))
    return only(['FrameTooLargeError'], () => decoder.next()) instanceof FrameTooLargeError
  }), { numRuns: 50 })
})

test('frame decoder: input that ends inside a frame (cut short, or trailing bytes after the last whole one) ends with TruncatedFrameError', t => {
  check(t, fc.property(payloads, fc.uint8Array({ minLength: 1, maxLength: MAX_FRAME_BYTES }), fc.nat(), cuts, (sent, last, cut, at) => {
    const partial = encodeFrame(last).subarray()
    const kept = 1 + cut % (partial.byteLength - 1)
    const input = Buffer.concat([concat(sent.map(payload => encodeFrame(payload))), partial.subarray(0, kept)])
    return only(['TruncatedFrameError'], () => decodeAll(split(input, at))) instanceof TruncatedFrameError
  }), { numRuns: RUNS })
})

test('frame reader: over a real stream, in any pieces, it agrees with the decoder', async t => {
  await check(t, fc.asyncProperty(payloads, cuts, async (sent, at) => {
    const [a, b] = await streamPair()
    const reader = new FrameReader(b, { maxFrameBytes: MAX_FRAME_BYTES })
    const writing = (async () => {
      for (const piece of split(concat(sent.map(payload => encodeFrame(payload))), at)) if (piece.byteLength > 0) await sendBytes(a, piece)
      await a.close()
    })()
    const received: Uint8Array[] = []
    for (let frame = await reader.read({ signal: AbortSignal.timeout(5000) }); frame !== null; frame = await reader.read({ signal: AbortSignal.timeout(5000) })) received.push(frame.subarray())
    await writing
    return received.length === sent.length && received.every((frame, index) => Buffer.from(frame).equals(Buffer.from(sent[index])))
  }), { numRuns: 40 })
})

const packageId = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(bytes => Buffer.from(bytes).toString('hex'))
const haveMessage: fc.Arbitrary<HaveMessage> = fc.oneof(
  fc.tuple(fc.constantFrom('interested', 'bitfield') as fc.Arbitrary<'interested' | 'bitfield'>, packageId, fc.integer({ min: 0, max: 2000 }))
    .chain(([type, id, chunkCount]) => fc.uint8Array({ minLength: Math.ceil(chunkCount / 8), maxLength: Math.ceil(chunkCount / 8) }).map(bits => ({ type, packageId: id, chunkCount, bits }))),
  fc.tuple(fc.constantFrom('have', 'fetching') as fc.Arbitrary<'have' | 'fetching'>, packageId, fc.integer({ min: 0, max: MAX_CHUNKS_PER_PACKAGE - 1 })).map(([type, id, index]) => ({ type, packageId: id, index })),
  packageId.map(id => ({ type: 'not-interested' as const, packageId: id }))
)

test('have decoder: arbitrary bytes give a message or MalformedHaveMessageError, and what decodes re-encodes to itself', t => {
  check(t, fc.property(fc.oneof(fc.uint8Array({ maxLength: 400 }), haveMessage.map(encodeHaveMessage), haveMessage.chain(message => fc.tuple(fc.constant(encodeHaveMessage(message)), fc.nat(), fc.integer({ min: 1, max: 255 })).map(([bytes, at, bit]) => {
    const copy = Uint8Array.from(bytes)
    copy[at % copy.byteLength] ^= bit
    return copy
  }))), bytes => {
    const decoded = only(['MalformedHaveMessageError'], () => decodeHaveMessage(bytes))
    if (decoded instanceof Error) return decoded instanceof MalformedHaveMessageError
    const again = decodeHaveMessage(encodeHaveMessage(decoded))
    const inRange = !('index' in decoded) || decoded.index < MAX_CHUNKS_PER_PACKAGE
    const counted = !('chunkCount' in decoded) || (decoded.chunkCount <= MAX_CHUNKS_PER_PACKAGE && decoded.bits.byteLength === Math.ceil(decoded.chunkCount / 8))
    return inRange && counted && JSON.stringify(again) === JSON.stringify(decoded)
  }), { numRuns: RUNS * 2 })
})

const pieceRequest: fc.Arbitrary<PieceRequest> = fc.record({
  packageId,
  index: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  offsetBytes: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  lengthBytes: fc.integer({ min: 0, max: 2 ** 32 - 1 })
})

test('chunk decoders: requests and headers decode within their bounds or throw MalformedPieceMessageError', t => {
  check(t, fc.property(fc.oneof(fc.uint8Array({ maxLength: 100 }), pieceRequest.map(encodePieceRequest)), bytes => {
    const request = only(['MalformedPieceMessageError'], () => decodePieceRequest(bytes))
    if (request instanceof Error) return request instanceof MalformedPieceMessageError
    return request.index < MAX_CHUNKS_PER_PACKAGE && request.lengthBytes >= 1 && request.lengthBytes <= MAX_PIECE_BYTES &&
      request.offsetBytes + request.lengthBytes <= MAX_CHUNK_SIZE_BYTES && Buffer.from(encodePieceRequest(request)).equals(Buffer.from(bytes))
  }), { numRuns: RUNS })
  check(t, fc.property(fc.oneof(fc.uint8Array({ maxLength: 12 }), fc.tuple(fc.constantFrom(...PIECE_STATUSES), fc.nat()).map(([status, value]) => encodePieceHeader(status, value))), bytes => {
    const header = only(['MalformedPieceMessageError'], () => decodePieceHeader(bytes))
    if (header instanceof Error) return header instanceof MalformedPieceMessageError
    return header.lengthBytes <= MAX_PIECE_BYTES && (header.status === 'ok' || header.lengthBytes === 0)
  }), { numRuns: RUNS })
})

/** An answer to a piece request as frames, sometimes honest, mostly not. */
const answers = fc.tuple(
  fc.constantFrom(...PIECE_STATUSES),
  fc.integer({ min: 0, max: 3000 }),
  fc.array(fc.oneof(fc.uint8Array({ maxLength: 1200 }).map(bytes => encodeFrame(bytes).subarray()), fc.uint8Array({ maxLength: 12 })), { maxLength: 5 }),
  fc.boolean()
).map(([status, announced, frames, withHeader]) => [...(withHeader ? [encodeFrame(encodePieceHeader(status, announced)).subarray()] : []), ...frames])

test('a piece request against arbitrary answers returns exactly the bytes asked for or throws a named error', async t => {
  const named = ['MalformedPieceMessageError', 'PieceRefusedError', 'FrameTooLargeError', 'TruncatedFrameError', 'PieceStalledError', 'StreamResetError']
  await check(t, fc.asyncProperty(answers, fc.integer({ min: 1, max: 2000 }), async (writes, lengthBytes) => {
    const [client, server] = await streamPair()
    void (async () => {
      for (const bytes of writes) if (bytes.byteLength > 0) await sendBytes(server, bytes)
      await server.close()
    })().catch(() => {})
    try {
      const bytes = await requestPiece(client, { packageId: 'ab'.repeat(32), index: 0, offsetBytes: 0, lengthBytes }, { signal: AbortSignal.timeout(5000), idleTimeoutMs: 500 })
      return bytes.byteLength === lengthBytes
    } catch (error) {
      if (error instanceof Error && named.includes(error.name)) return true
      throw new Error(`not a named error: ${String((error as Error)?.name)}: ${String((error as Error)?.message)}`)
    } finally {
      client.abort(new Error('done'))
    }
  }), { numRuns: 60 })
})
