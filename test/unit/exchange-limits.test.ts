import '../../protocol/polyfill.js'
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { streamPair } from '@libp2p/utils'
import { PeerGate } from '../../agent/p2p/gater.js'
import { InvalidSwarmKeyError, generateSwarmKey, parseSwarmKey, swarmKeyIdOf } from '../../agent/p2p/private-network.js'
import {
  ChunkAdmission, ChunkServer, MalformedPieceMessageError, PieceRefusedError, PieceStalledError,
  decodePieceHeader, encodePieceHeader, requestPiece, type PieceRequest
} from '../../agent/protocols/chunk/index.js'
import { FrameReader, encodeFrame, sendBytes } from '../../agent/protocols/frames.js'
import { peerIdFromString } from '@libp2p/peer-id'

const PACKAGE = 'ab'.repeat(32)
const PEER_A = '12D3KooWLRPJAA5o6Z6MsERnMEh7Ej1vbCGhQpdWV8ZMuvAV6GrB'
const PEER_B = '12D3KooWAvdPCjCgrBEMxjfXxwGQFuYtDE1hvSXkfeHwnXGStS6B'

function clock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let time = start
  return { now: () => time, advance: ms => { time += ms } }
}

test('admission: a burst, the sustained rate, waits of at least the floor, and a disconnect for a peer that keeps asking', t => {
  const time = clock()
  const admission = new ChunkAdmission({ requestsPerSecond: 10, burst: 3, refusalsBeforeDisconnect: 4, abuseWindowMs: 10_000, minRetryAfterMs: 1000, now: time.now })
  const decisions = Array.from({ length: 8 }, () => admission.admit('a'))
  t.deepEqual(decisions.slice(0, 3), Array(3).fill({ admitted: true }), 'the burst')
  t.deepEqual(decisions.slice(3, 7), Array(4).fill({ admitted: false, retryAfterMs: 1000, disconnect: false }), 'refused with the floor as the wait (the bucket itself says 100 ms)')
  t.deepEqual(decisions[7], { admitted: false, retryAfterMs: 1000, disconnect: true }, 'the fifth refusal within the window disconnects')
  t.deepEqual(admission.admit('b'), { admitted: true }, 'another peer has its own budget')
  time.advance(100)
  t.deepEqual(admission.admit('a'), { admitted: true }, 'the sustained rate')
  admission.forget('a')
  t.deepEqual(Array.from({ length: 3 }, () => admission.admit('a')), Array(3).fill({ admitted: true }), 'a forgotten peer starts afresh')
})

test('admission: a requester that honours the wait is never disconnected', t => {
  const time = clock()
  const admission = new ChunkAdmission({ requestsPerSecond: 50, burst: 50, now: time.now })
  let disconnected = false
  // Eight requests in flight, as the picker allows per peer, re-sent as fast as answers come, pausing when told to.
  for (let round = 0; round < 2000; round++) {
    let pause = 0
    for (let slot = 0; slot < 8; slot++) {
      const decision = admission.admit('honest')
      if (!decision.admitted) {
        pause = Math.max(pause, decision.retryAfterMs)
        disconnected ||= decision.disconnect
      }
    }
    time.advance(Math.max(1, pause))
  }
  t.false(disconnected)
})

test('the gate says why it refuses: not allowed, banned, suspended until a time', t => {
  const time = clock()
  const refused: string[] = []
  const banned = new Set<string>()
  const gate = new PeerGate({ isBanned: peer => banned.has(peer), now: time.now, onRefused: (peer, reason, direction) => { refused.push(`${direction} ${reason}`) } })
  gate.setAllowed([PEER_A])
  t.is(gate.refusal(PEER_B), 'peer-not-allowed')
  t.is(gate.refusal(PEER_A), undefined)
  banned.add(PEER_A)
  t.is(gate.refusal(PEER_A), 'peer-banned')
  banned.clear()
  gate.suspend(PEER_A, time.now() + 60_000)
  t.is(gate.refusal(PEER_A), 'peer-suspended')
  const gater = gate.connectionGater()
  t.true(gater.denyInboundEncryptedConnection!(peerIdFromString(PEER_A), undefined as never) as boolean)
  t.true(gater.denyDialPeer!(peerIdFromString(PEER_B)) as boolean)
  time.advance(60_000)
  t.is(gate.refusal(PEER_A), undefined, 'the suspension lapses')
  t.false(gater.denyInboundEncryptedConnection!(peerIdFromString(PEER_A), undefined as never) as boolean)
  t.deepEqual(refused, ['inbound peer-suspended', 'outbound peer-not-allowed'])
})

test('rate-limited answers carry their wait; other refusals carry nothing; nonsense is malformed', t => {
  t.deepEqual(decodePieceHeader(encodePieceHeader('rate-limited', 1500)), { status: 'rate-limited', lengthBytes: 0, retryAfterMs: 1500 })
  const cases: Array<[string, Uint8Array]> = [
    ['a wait of a day', encodePieceHeader('rate-limited', 24 * 3600 * 1000)],
    ['a length on a refusal', encodePieceHeader('not-cached', 10)],
    ['an unknown status', Uint8Array.from([99, 0, 0, 0, 0])]
  ]
  for (const [what, bytes] of cases) t.throws(() => decodePieceHeader(bytes), { instanceOf: MalformedPieceMessageError }, what)
})

test('a server over a peer\'s budget answers rate-limited with the wait, and reports a peer that keeps asking', async t => {
  const time = clock()
  const chunk = randomBytes(4096)
  const refusals: string[] = []
  const abusers: string[] = []
  const server = new ChunkServer({
    source: { readPiece: async (request: PieceRequest) => chunk.subarray(request.offsetBytes, request.offsetBytes + request.lengthBytes) },
    admission: new ChunkAdmission({ requestsPerSecond: 1, burst: 2, refusalsBeforeDisconnect: 2, minRetryAfterMs: 1000, now: time.now }),
    onRefused: (peer, reason) => { refusals.push(`${peer} ${reason}`) },
    onAbuse: peer => { abusers.push(peer) }
  })
  const ask = async (): Promise<unknown> => {
    const [client, remote] = await streamPair()
    void server.handle(remote, 'peer-a')
    try {
      return (await requestPiece(client, { packageId: PACKAGE, index: 0, offsetBytes: 0, lengthBytes: 100 }, { signal: AbortSignal.timeout(5000) })).byteLength
    } catch (error) {
      return error instanceof PieceRefusedError ? `${error.status} ${error.retryAfterMs}` : (error as Error).name
    }
  }
  const answers = []
  for (let index = 0; index < 5; index++) answers.push(await ask())
  t.deepEqual(answers, [100, 100, 'rate-limited 1000', 'rate-limited 1000', 'rate-limited 1000'])
  t.deepEqual(refusals, Array(3).fill('peer-a rate-limited'))
  t.deepEqual(abusers, ['peer-a'], 'the third refusal within the window reports the peer')
})

test('progress, not any byte, keeps a piece request alive: a dribbling peer stalls, a slow honest one completes', async t => {
  const request: PieceRequest = { packageId: PACKAGE, index: 0, offsetBytes: 0, lengthBytes: 64 * 1024 }
  const serve = async (frameBytes: number, everyMs: number): Promise<unknown> => {
    const [client, remote] = await streamPair()
    void (async () => {
      await sendBytes(remote, encodeFrame(encodePieceHeader('ok', request.lengthBytes)))
      for (let sent = 0; sent < request.lengthBytes && remote.status === 'open'; sent += frameBytes) {
        await new Promise(resolve => setTimeout(resolve, everyMs))
        await sendBytes(remote, encodeFrame(new Uint8Array(Math.min(frameBytes, request.lengthBytes - sent)))).catch(() => {})
      }
      await remote.close().catch(() => {})
    })()
    try {
      return (await requestPiece(client, request, { signal: AbortSignal.timeout(20_000), idleTimeoutMs: 400, minProgressBytes: 8 * 1024 })).byteLength
    } catch (error) {
      return (error as Error).name
    } finally {
      client.abort(new Error('done'))
    }
  }
  t.is(await serve(16, 20), 'PieceStalledError', 'sixteen bytes every 20 ms never add up to 8 KiB in 400 ms')
  t.is(await serve(8 * 1024, 50), 64 * 1024, 'a peer that sends 8 KiB every 50 ms completes')
  t.true(new PieceStalledError(400, 8192).message.includes('fewer than 8192 bytes'))
})

test('a reset stream is told apart from a clean end and from a truncated frame', async t => {
  const [a, b] = await streamPair()
  const reader = new FrameReader(b, { maxFrameBytes: 100 })
  await sendBytes(a, encodeFrame(new Uint8Array(50)).subarray(0, 20))
  a.abort(new Error('gone'))
  await t.throwsAsync(reader.read({ signal: AbortSignal.timeout(5000) }), { name: 'StreamResetError' })
})

test('swarm keys: the libp2p format only, in canonical form; a fingerprint that tells keys apart', t => {
  const key = generateSwarmKey()
  t.regex(key, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
  t.is(Buffer.from(parseSwarmKey(key.replace(/\n/g, '\r\n').toUpperCase().replace('/KEY/SWARM/PSK/1.0.0/', '/key/swarm/psk/1.0.0/').replace('/BASE16/', '/base16/'))).toString(), key, 'CRLF and upper-case hex are read as the same key')
  t.is(swarmKeyIdOf(Buffer.from(key)), swarmKeyIdOf(Buffer.from(key.trimEnd())))
  t.not(swarmKeyIdOf(Buffer.from(key)), swarmKeyIdOf(Buffer.from(generateSwarmKey())))
  const bad: Array<[string, string]> = [
    ['32 raw bytes', randomBytes(32).toString('latin1')],
    ['another encoding', '/key/swarm/psk/1.0.0/\n/base64/\n' + randomBytes(32).toString('base64')],
    ['a short key', '/key/swarm/psk/1.0.0/\n/base16/\n' + 'ab'.repeat(16)],
    ['another header', '/key/swarm/psk/2.0.0/\n/base16/\n' + 'ab'.repeat(32)],
    ['a huge file', 'x'.repeat(10_000)]
  ]
  for (const [what, text] of bad) t.throws(() => parseSwarmKey(text), { instanceOf: InvalidSwarmKeyError }, what)
})
