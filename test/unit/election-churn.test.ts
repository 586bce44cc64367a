import test from 'ava'
import { OriginElection, isOriginFetcher, rendezvousWinner } from '../../agent/download/election.js'
import { PiecePicker, type PickedRequest } from '../../agent/download/picker.js'

const PACKAGE = 'ef'.repeat(32)

function clock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let time = start
  return { now: () => time, advance: ms => { time += ms } }
}

const origin = (picks: PickedRequest[]): number[] => picks.filter(pick => pick.source.kind === 'origin').map(pick => pick.index).sort((a, b) => a - b)
const range = (count: number): number[] => Array.from({ length: count }, (_, index) => index)

/**
 * Hand-back on connection close: the chunks elected to a peer whose
 * connection closed are elected among the others at once, with no clock
 * advance, including one it had announced it was fetching.
 */
test('hand-back: a leaving elected peer\'s chunks, announced ones too, go to the others at the same instant', t => {
  const time = clock()
  const picker = new PiecePicker({ packageId: PACKAGE, self: 'self', chunkCount: 24, now: time.now, random: () => 0.5, gatherMs: 0, maxOriginRequests: 24, maxRequests: 24 })
  picker.peerInterested('a', true)
  picker.peerInterested('b', true)
  const ofA = range(24).filter(index => rendezvousWinner(PACKAGE, index, ['self', 'a', 'b']) === 'a')
  const announced = ofA[0]
  picker.peerFetching('a', announced)
  const first = origin(picker.next())
  t.deepEqual(first, range(24).filter(index => rendezvousWinner(PACKAGE, index, ['self', 'a', 'b']) === 'self'), 'only its own share before')
  picker.peerLeft('a')
  const after = origin(picker.next())
  t.deepEqual(after, ofA.filter(index => rendezvousWinner(PACKAGE, index, ['self', 'b']) === 'self'), 'the leaver\'s share that this device now wins, at once')
  t.true(after.includes(announced) === (rendezvousWinner(PACKAGE, announced, ['self', 'b']) === 'self'), 'its announced fetch is forgotten with it')
})

const joins: Array<{ name: string, announcedBy?: string, inFlight?: boolean, expectStarted: boolean }> = [
  { name: 'a chunk another peer announced stays with it when a device joins', announcedBy: 'b', expectStarted: false },
  { name: 'a chunk this device has in flight is not started again when a device joins', inFlight: true, expectStarted: false },
  { name: 'a chunk nobody started is elected anew among the newcomer too', expectStarted: true }
]
for (const row of joins) {
  test(`join: ${row.name}`, t => {
    const time = clock()
    const picker = new PiecePicker({ packageId: PACKAGE, self: 'self', chunkCount: 64, now: time.now, random: () => 0.5, gatherMs: 0, maxOriginRequests: 64, maxRequests: 64 })
    picker.peerInterested('b', true)
    // A chunk this device wins with and without the newcomer: it is this device's either way, unless started elsewhere.
    const index = range(64).find(candidate => rendezvousWinner(PACKAGE, candidate, ['self', 'b']) === 'self' && rendezvousWinner(PACKAGE, candidate, ['self', 'b', 'c']) === 'self')!
    if (row.announcedBy !== undefined) picker.peerFetching(row.announcedBy, index)
    if (row.inFlight === true) t.true(origin(picker.next()).includes(index))
    else if (row.announcedBy === undefined) { /* nothing started yet */ }
    picker.peerInterested('c', true)
    const started = origin(picker.next())
    t.is(started.includes(index), row.expectStarted)
    t.is(picker.requestsFor(index).length, row.inFlight === true ? 1 : row.expectStarted ? 1 : 0, 'one request at most')
  })
}

test('origin fetchers: about K of N devices, the same for every device that knows N, every device in a site of K or fewer', t => {
  const peers = range(2000).map(index => `peer-${index}`)
  const fetchers = peers.filter(peer => isOriginFetcher(PACKAGE, peer, 8, 2000))
  t.true(fetchers.length >= 2 && fetchers.length <= 20, `${fetchers.length} fetchers of 2000`)
  t.true(peers.slice(0, 8).every(peer => isOriginFetcher(PACKAGE, peer, 8, 8)))
  const other = 'ab'.repeat(32)
  t.notDeepEqual(peers.filter(peer => isOriginFetcher(other, peer, 8, 2000)), fetchers, 'each package has its own')
})

/** A device of a large site that is no origin fetcher: never elected, waits while the site makes progress, falls back once it stops. */
const large: Array<{ step: string, advance: number, progress?: boolean, starving: boolean, expect: string }> = [
  { step: 'never elected, nothing started while it has other work', advance: 0, starving: false, expect: 'wait' },
  { step: 'starving: waits, and not only for the election timeout', advance: 0, starving: true, expect: 'wait' },
  { step: 'past the election timeout it still waits: an origin fetch may take that long', advance: 2000, starving: true, expect: 'wait' },
  { step: 'the site shows progress (a have) before the timeout', advance: 7000, progress: true, starving: true, expect: 'wait' },
  { step: 'the timeout after the start has passed, but not after the progress', advance: 5000, starving: true, expect: 'wait' },
  { step: 'no progress for as long as an origin fetch may take: it falls back', advance: 5000, starving: true, expect: 'fetch:fallback' }
]
test('large site: a device that is no origin fetcher is never elected and falls back only once the site stops making progress', t => {
  const time = clock()
  const size = 1000
  const self = range(size).map(index => `device-${index}`).find(peer => !isOriginFetcher(PACKAGE, peer, 8, size))!
  const neighbour = range(size).map(index => `device-${index}`).find(peer => peer !== self && !isOriginFetcher(PACKAGE, peer, 8, size))!
  const election = new OriginElection({ packageId: PACKAGE, self, now: time.now, gatherMs: 0, electionTimeoutMs: 1000, fetchTimeoutMs: 10_000, siteSize: () => size })
  election.addCandidate(neighbour)
  t.is(election.winner(0), undefined)
  t.false(election.isElected(0))
  t.false(election.isRunnerUp(0))
  for (const row of large) {
    time.advance(row.advance)
    if (row.progress === true) election.progress(neighbour)
    const decision = election.decide(0, row.starving)
    t.is(decision.action === 'fetch' ? `fetch:${decision.reason}` : 'wait', row.expect, row.step)
  }
})

test('large site: a device that is no origin fetcher and has no peer in sight falls back after the election timeout, not the fetch timeout', t => {
  const time = clock()
  const size = 1000
  const self = range(size).map(index => `device-${index}`).find(peer => !isOriginFetcher(PACKAGE, peer, 8, size))!
  let inSight = 0
  const election = new OriginElection({ packageId: PACKAGE, self, now: time.now, gatherMs: 0, electionTimeoutMs: 1000, fetchTimeoutMs: 60_000, siteSize: () => size, peersInSight: () => inSight })
  // A peer that claimed the chunk and was then banned or left: the site looked busy a moment ago.
  election.settled(1)
  t.like(election.decide(0, true), { action: 'wait', until: time.now() + 1000 }, 'nobody can bring the chunk: an election timeout only')
  time.advance(1000)
  t.deepEqual(election.decide(0, true), { action: 'fetch', reason: 'fallback' })
  inSight = 1
  t.like(election.decide(2, true), { action: 'wait', until: time.now() + 60_000 }, 'with a peer in sight, the chunk may come through it')
})

test('large site: the chunks a device fetched from the origin by fallback do not put off the fallback of the others', t => {
  const time = clock()
  const size = 1000
  const self = range(size).map(index => `device-${index}`).find(peer => !isOriginFetcher(PACKAGE, peer, 8, size))!
  const picker = new PiecePicker({ packageId: PACKAGE, self, chunkCount: 8, now: time.now, random: () => 0.5, gatherMs: 0, electionTimeoutMs: 1000, fetchTimeoutMs: 60_000, maxOriginRequests: 2, siteSize: () => size, peersInSight: () => 1 })
  t.deepEqual(picker.next(), [], 'the site\'s fetchers are given the time of an origin fetch')
  time.advance(60_000)
  const first = picker.next()
  t.deepEqual(first.map(pick => pick.source), [{ kind: 'origin', reason: 'fallback' }, { kind: 'origin', reason: 'fallback' }])
  time.advance(500)
  for (const pick of first) picker.completed(pick.id)
  const second = picker.next()
  t.is(second.length, 2, 'the next two start at once: this device\'s own fetches are no progress of the site')
  t.true(second.every(pick => pick.source.kind === 'origin'))
})

test('large site: an origin fetcher gathers until every fellow fetcher it knows of is a candidate', t => {
  const time = clock()
  const size = 1000
  const peers = range(size).map(index => `device-${index}`)
  const fetchers = peers.filter(peer => isOriginFetcher(PACKAGE, peer, 8, size))
  const [self, ...fellows] = fetchers
  const election = new OriginElection({ packageId: PACKAGE, self, now: time.now, gatherMs: 2000, siteSize: () => size, siteFetchers: () => fellows.length })
  election.addCandidate(peers.find(peer => !fetchers.includes(peer))!)
  for (const fellow of fellows.slice(1)) election.addCandidate(fellow)
  election.endGather()
  t.true(election.gathering, 'one fellow is missing')
  election.addCandidate(fellows[0])
  election.endGather()
  t.false(election.gathering)
  for (const index of range(32)) t.is(election.winner(index), rendezvousWinner(PACKAGE, index, fetchers), 'elected among the fetchers alone')
})
