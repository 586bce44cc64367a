import test from 'ava'
import { OriginElection, rendezvousWinner } from '../../agent/download/election.js'
import { PiecePicker, type PiecePickerInit, type PickedRequest } from '../../agent/download/picker.js'

const PACKAGE = 'cd'.repeat(32)

function clock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let time = start
  return { now: () => time, advance: ms => { time += ms } }
}

/** A deterministic stand-in for Math.random. */
function seeded (seed = 42): () => number {
  let state = seed
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648
    return state / 2147483648
  }
}

function bits (chunkCount: number, held: number[]): Uint8Array {
  const out = new Uint8Array(Math.ceil(chunkCount / 8))
  for (const index of held) out[index >> 3] |= 0x80 >> (index & 7)
  return out
}

function picker (init: Partial<PiecePickerInit> & { chunkCount: number }, time = clock()): PiecePicker {
  return new PiecePicker({ packageId: PACKAGE, self: 'self', now: time.now, random: seeded(), gatherMs: 0, ...init })
}

const describe = (picks: PickedRequest[]): string[] => picks.map(p => `${p.index}@${p.source.kind === 'peer' ? p.source.peer : `origin:${p.source.reason}`}${p.duplicate ? '+dup' : ''}`)

test('rendezvous: every peer elects the same winner, and a leaving candidate moves only its own chunks', t => {
  const peers = ['p1', 'p2', 'p3', 'p4']
  const before = Array.from({ length: 200 }, (_, index) => rendezvousWinner(PACKAGE, index, peers))
  t.deepEqual(before, Array.from({ length: 200 }, (_, index) => rendezvousWinner(PACKAGE, index, [...peers].reverse())), 'order does not matter')
  const counts = new Map<string, number>()
  for (const winner of before) counts.set(winner!, (counts.get(winner!) ?? 0) + 1)
  for (const peer of peers) t.true((counts.get(peer) ?? 0) > 25, `${peer} wins a fair share: ${counts.get(peer)}`)
  const after = Array.from({ length: 200 }, (_, index) => rendezvousWinner(PACKAGE, index, ['p1', 'p2', 'p4']))
  for (let index = 0; index < 200; index++) if (before[index] !== 'p3') t.is(after[index], before[index])
  t.is(rendezvousWinner(PACKAGE, 0, []), undefined)
})

test('election table: gather, elected, waiting, fallback after starving, announced fetches', t => {
  const time = clock()
  const election = new OriginElection({ packageId: PACKAGE, self: 'self', now: time.now, gatherMs: 1000, electionTimeoutMs: 10_000, fetchTimeoutMs: 60_000 })
  election.addCandidate('other')
  const mine = Array.from({ length: 50 }, (_, i) => i).find(i => election.winner(i) === 'self')!
  const theirs = Array.from({ length: 50 }, (_, i) => i).find(i => election.winner(i) === 'other')!
  const start = time.now()
  const rows: Array<[string, number, number, boolean, object]> = [
    ['during the gather nobody fetches', 0, mine, false, { action: 'wait', until: start + 1000 }],
    ['after it, the elected device fetches', 1000, mine, false, { action: 'fetch', reason: 'elected' }],
    ['a busy device waits for the elected peer without a clock', 1000, theirs, false, { action: 'wait' }],
    ['a starving device starts the clock', 1000, theirs, true, { action: 'wait', until: start + 11_000 }],
    ['and still waits just before it runs out', 10_999, theirs, true, { action: 'wait', until: start + 11_000 }],
    ['then fetches itself', 11_000, theirs, true, { action: 'fetch', reason: 'fallback' }]
  ]
  for (const [what, at, index, starving, expected] of rows) {
    time.advance(start + at - time.now())
    t.deepEqual(election.decide(index, starving), expected, what)
  }
  t.is(election.winner(theirs), 'self', 'the stalled peer is out of the elections')
  election.progress('other')
  t.is(election.winner(theirs), 'other', 'until it shows progress')
  election.fetching('other', theirs)
  t.deepEqual(election.decide(theirs, true), { action: 'wait', until: time.now() + 60_000 }, 'an announced fetch is waited for')
  time.advance(60_000)
  t.deepEqual(election.decide(theirs, false), { action: 'fetch', reason: 'elected' }, 'an announced fetch that never ends stalls its peer')
})

test('a fallback takes over one chunk of a winner that shows progress, without moving its other chunks', t => {
  const time = clock()
  const election = new OriginElection({ packageId: PACKAGE, self: 'self', now: time.now, gatherMs: 0, electionTimeoutMs: 10_000, fetchTimeoutMs: 60_000 })
  election.addCandidate('busy')
  const theirs = Array.from({ length: 80 }, (_, i) => i).filter(i => election.winner(i) === 'busy')
  t.deepEqual(election.decide(theirs[0], true), { action: 'wait', until: time.now() + 10_000 })
  time.advance(5_000)
  election.progress('busy')
  time.advance(5_000)
  t.deepEqual(election.decide(theirs[0], true), { action: 'fetch', reason: 'fallback' }, 'the chunk waited for is taken over')
  t.true(theirs.every(index => election.winner(index) === 'busy'), 'the busy peer keeps the rest of its share')
  // Silent for a whole timeout: then it is out of the elections.
  t.deepEqual(election.decide(theirs[1], true), { action: 'wait', until: time.now() + 10_000 })
  time.advance(10_000)
  t.deepEqual(election.decide(theirs[1], true), { action: 'fetch', reason: 'fallback' })
  t.true(theirs.every(index => election.winner(index) === 'self'), 'a silent winner loses its share')
})

test('rarest first with a random tie-break, bounded per peer and in all', t => {
  const p = picker({ chunkCount: 8, maxRequestsPerPeer: 2, maxRequests: 3 })
  p.peerBitfield('a', bits(8, [0, 1, 2, 3, 4, 5, 6, 7]))
  p.peerBitfield('b', bits(8, [0, 1, 2, 3]))
  p.peerBitfield('c', bits(8, [0, 1]))
  const picks = describe(p.next())
  t.is(picks.length, 3, 'the total bound')
  const fromA = picks.filter(text => text.endsWith('@a'))
  t.is(fromA.length, 2, 'at most two per peer')
  t.true(fromA.every(text => Number(text.split('@')[0]) >= 4), `a serves the rarest chunks (only a holds 4..7): ${picks.join(' ')}`)
  const third = picks.find(text => !text.endsWith('@a'))!
  t.regex(third, /^[23]@b$/, 'the third slot goes to the next rarest, from b')
  t.deepEqual(p.next(), [], 'nothing more while three are in flight')
})

test('the tie-break is random: different seeds start on different chunks', t => {
  const firsts = new Set<number>()
  for (let seed = 1; seed <= 20; seed++) {
    const p = new PiecePicker({ packageId: PACKAGE, self: 'self', now: clock().now, random: seeded(seed), gatherMs: 0, chunkCount: 16, maxRequests: 1 })
    p.peerBitfield('a', bits(16, Array.from({ length: 16 }, (_, i) => i)))
    firsts.add(p.next()[0].index)
  }
  t.true(firsts.size >= 5, `${firsts.size} different first chunks`)
})

test('chunks no peer holds go to the origin only when this device is elected', t => {
  const p = picker({ chunkCount: 40, maxRequests: 40, maxOriginRequests: 40 })
  p.peerInterested('other', true)
  const picks = p.next()
  t.true(picks.length > 5 && picks.length < 35, `${picks.length} of 40 elected here`)
  for (const pick of picks) {
    t.deepEqual(pick.source, { kind: 'origin', reason: 'elected' })
    t.is(p.election.winner(pick.index), 'self')
  }
  t.is(p.next().length, 0, 'the rest waits for the other downloader')
})

test('the origin keeps its slots while peers could fill every one: the WAN stays busy', t => {
  const p = picker({ chunkCount: 64, maxRequests: 16, maxRequestsPerPeer: 8, maxOriginRequests: 4 })
  p.peerInterested('a', true)
  p.peerInterested('b', true)
  // a and b already hold half the package (fetched by them), which would fill all 16 slots.
  const half = Array.from({ length: 32 }, (_, i) => i)
  p.peerBitfield('a', bits(64, half))
  p.peerBitfield('b', bits(64, half))
  const picks = p.next()
  t.is(picks.length, 16)
  const origin = picks.filter(pick => pick.source.kind === 'origin')
  t.is(origin.length, 4, `four origin requests among ${describe(picks).join(' ')}`)
  for (const pick of origin) t.true(pick.index >= 32 && p.election.winner(pick.index) === 'self', 'elected chunks nobody holds')
  const peerPick = picks.find(pick => pick.source.kind === 'peer')!
  p.completed(peerPick.id)
  t.deepEqual(p.next().map(pick => pick.source.kind), ['peer'], 'a freed peer slot goes to a peer while the origin is at its bound')
  p.completed(origin[0].id)
  const next = p.next()
  t.is(next.length, 1)
  t.is(next[0].source.kind, 'origin', 'a freed origin slot goes to the origin first')
})

test('spare origin capacity takes over the end of a slower peer\'s share, after a while, leaving it what it starts next', t => {
  const time = clock()
  const p = picker({ chunkCount: 60, maxRequests: 16, maxOriginRequests: 2, spareAfterMs: 500 }, time)
  p.peerInterested('a', true)
  // This device works through its own share.
  for (let round = 0; round < 60; round++) {
    const picks = p.next()
    if (picks.length === 0) break
    t.true(picks.every(pick => pick.source.kind === 'origin' && pick.source.reason === 'elected'), 'its own share first')
    for (const pick of picks) p.completed(pick.id)
  }
  const theirs = Array.from({ length: 60 }, (_, i) => i).filter(index => p.election.winner(index) === 'a')
  t.true(theirs.length > 10, `a's share: ${theirs.length} chunks`)
  // a has started its first two chunks and announced them.
  p.peerFetching('a', theirs[0])
  p.peerFetching('a', theirs[1])
  t.deepEqual(p.next(), [], 'nothing taken at once')
  t.is(p.wakeAt(), time.now() + 500)
  time.advance(500)
  const taken = p.next()
  t.deepEqual(taken.map(pick => pick.index), [theirs.at(-1), theirs.at(-2)], 'the end of a\'s share')
  t.true(taken.every(pick => pick.source.kind === 'origin' && pick.source.reason === 'spare'))
  for (const pick of taken) p.completed(pick.id)
  // Later, only what a would not start next is taken: never its next two.
  for (let round = 0; round < 60; round++) {
    const picks = p.next()
    if (picks.length === 0) break
    for (const pick of picks) p.completed(pick.id)
  }
  const left = theirs.filter(index => !p.isHeld(index))
  t.deepEqual(left, theirs.slice(0, 4), 'a\'s two announced chunks and the two it starts next stay with it')
})

test('two devices with spare capacity take disjoint chunks of a third one\'s share', t => {
  const takenBy = (self: string, other: string): number[] => {
    const time = clock()
    const p = new PiecePicker({ packageId: PACKAGE, self, now: time.now, random: seeded(), gatherMs: 0, chunkCount: 120, maxRequests: 16, maxOriginRequests: 4, spareAfterMs: 0 })
    p.peerInterested('slow', true)
    p.peerInterested(other, true)
    const spare: number[] = []
    for (let round = 0; round < 200; round++) {
      for (const pick of p.next()) {
        if (pick.source.kind === 'origin' && pick.source.reason === 'spare') spare.push(pick.index)
        p.completed(pick.id)
      }
    }
    return spare
  }
  const byA = takenBy('a', 'b')
  const byB = takenBy('b', 'a')
  t.true(byA.length > 5 && byB.length > 5, `a takes ${byA.length}, b takes ${byB.length}`)
  t.deepEqual(byA.filter(index => byB.includes(index)), [], 'no chunk taken twice')
})

test('a peer have turns a chunk waited for into a peer request', t => {
  const p = picker({ chunkCount: 40, maxRequests: 40, maxOriginRequests: 40 })
  p.peerInterested('a', true)
  p.next()
  const theirs = Array.from({ length: 40 }, (_, i) => i).find(index => p.election.winner(index) === 'a')!
  t.is(p.requestsFor(theirs).length, 0, 'waiting for a')
  p.peerHave('a', theirs)
  t.deepEqual(describe(p.next()), [`${theirs}@a`])
})

test('endgame: the last chunk is asked of a second peer, and completion cancels the slower copy', t => {
  const p = picker({ chunkCount: 1, maxRequests: 4 })
  p.peerBitfield('a', bits(1, [0]))
  p.peerBitfield('b', bits(1, [0]))
  const [primary, duplicate] = p.next()
  t.false(primary.duplicate)
  t.true(duplicate.duplicate)
  t.not((primary.source as { peer: string }).peer, (duplicate.source as { peer: string }).peer)
  t.deepEqual(p.completed(primary.id).map(other => other.id), [duplicate.id])
  t.true(p.complete)
  p.failed(duplicate.id, 'cancelled')
  t.is(p.requestsFor(0).length, 0)
  t.is(p.inFlight, 0)
})

test('a peer that says not-cached loses the bit; one that keeps failing is rested, then used again', t => {
  const time = clock()
  const p = picker({ chunkCount: 4, maxRequestsPerPeer: 1, maxRequests: 2, peerFailuresBeforeRest: 2, peerRestMs: 5000 }, time)
  p.peerBitfield('a', bits(4, [0, 1, 2, 3]))
  const [first] = p.next()
  p.failed(first.id, 'not-cached')
  const picks = p.next()
  const fromOrigin = picks.find(pick => pick.source.kind === 'origin')!
  const fromPeer = picks.find(pick => pick.source.kind === 'peer')!
  t.is(fromOrigin.index, first.index, 'the chunk a does not hold is not asked of it again')
  t.not(fromPeer.index, first.index)
  p.completed(fromOrigin.id)
  p.failed(fromPeer.id, 'error')
  const whileResting = p.next()
  t.true(whileResting.length > 0, 'rested after two failures in a row: what only it holds is not held up by it')
  t.true(whileResting.every(pick => pick.source.kind === 'origin'), describe(whileResting).join(' '))
  t.is(p.wakeAt(), time.now() + 5000)
  for (const pick of whileResting) p.failed(pick.id, 'cancelled')
  time.advance(5000)
  t.true(p.next().some(pick => pick.source.kind === 'peer' && pick.source.peer === 'a'), 'used again once rested')
})

test('a busy or rate-limited peer is paused for the wait it names, and what it holds waits for it rather than going to the origin', t => {
  const time = clock()
  const p = picker({ chunkCount: 4, maxRequestsPerPeer: 2, maxRequests: 4, peerFailuresBeforeRest: 1 }, time)
  p.peerBitfield('a', bits(4, [0, 1, 2, 3]))
  const first = p.next()
  t.deepEqual(first.map(pick => pick.source.kind), ['peer', 'peer'])
  p.failed(first[0].id, 'busy', 1500)
  p.failed(first[1].id, 'busy')
  t.deepEqual(p.next(), [], 'paused: nothing asked of it, nothing of its chunks from the origin')
  t.is(p.wakeAt(), time.now() + 1500, 'the longer of the waits')
  time.advance(1500)
  t.deepEqual(p.next().map(pick => pick.source.kind === 'peer' ? pick.source.peer : 'origin'), ['a', 'a'], 'a pause is not a failure: no rest follows')
})

test('a peer that leaves or is banned stops being a source and a candidate', t => {
  const p = picker({ chunkCount: 8, maxRequests: 8, maxOriginRequests: 8 })
  p.peerBitfield('a', bits(8, [0, 1, 2, 3, 4, 5, 6, 7]), true)
  p.peerBitfield('b', bits(8, [0, 1, 2, 3]), true)
  p.ban('a')
  p.peerHave('a', 5)
  const picks = p.next()
  t.true(picks.every(pick => pick.source.kind !== 'peer' || pick.source.peer === 'b'), describe(picks).join(' '))
  t.true(p.isBanned('a'))
  p.peerLeft('b')
  for (const pick of picks) p.failed(pick.id, 'error')
  const after = p.next()
  t.true(after.length === 8 && after.every(pick => pick.source.kind === 'origin'), 'alone, every chunk is elected here')
})

test('an origin failure waits before the origin is asked again', t => {
  const time = clock()
  const p = picker({ chunkCount: 1 }, time)
  const [first] = p.next()
  p.failed(first.id, 'error', 250)
  t.deepEqual(p.next(), [])
  t.is(p.wakeAt(), time.now() + 250)
  time.advance(250)
  t.is(p.next()[0].index, 0)
})

test('a dead elected peer costs a starving device one election timeout, then its chunks move', t => {
  const time = clock()
  const p = picker({ chunkCount: 30, maxRequests: 30, maxOriginRequests: 30, electionTimeoutMs: 10_000 }, time)
  p.peerInterested('silent', true)
  const mine = p.next()
  for (const pick of mine) p.completed(pick.id)
  const waiting = 30 - mine.length
  t.true(waiting > 0)
  t.deepEqual(p.next(), [], 'starving: the clock starts')
  time.advance(10_000)
  const after = p.next()
  t.is(after.length, waiting, 'one timeout, and every chunk of the stalled peer comes here')
  t.is(after.filter(pick => pick.source.kind === 'origin' && pick.source.reason === 'fallback').length, 1)
})
