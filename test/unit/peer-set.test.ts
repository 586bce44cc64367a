import test from 'ava'
import { PeerSetPolicy, type ConnectedPeer, type DialCandidate } from '../../agent/p2p/peer-set.js'

function policy (init: { maxPeers?: number, dialTarget?: number, rotationIntervalMs?: number, minConnectionAgeMs?: number } = {}): { policy: PeerSetPolicy, advance: (ms: number) => void, at: () => number } {
  let time = 0
  let seed = 1
  // A fixed sequence in [0, 1): the same plans on every run.
  const random = (): number => { seed = (seed * 16807) % 2147483647; return (seed - 1) / 2147483646 }
  return { policy: new PeerSetPolicy({ ...init, now: () => time, random }), advance: ms => { time += ms }, at: () => time }
}

const candidates = (count: number, caches: number[] = []): DialCandidate[] =>
  Array.from({ length: count }, (_, i) => ({ peer: `c${i}`, siteCache: caches.includes(i) }))
const connectedPeers = (count: number, extra: Partial<ConnectedPeer> = {}): ConnectedPeer[] =>
  Array.from({ length: count }, (_, i) => ({ peer: `p${i}`, since: 0, usefulChunks: 0, siteCache: false, ...extra }))

test('the defaults: 16 connections, dialing up to 6 of them (an average degree of 12 leaves room for late agents)', t => {
  const { policy: peers } = policy()
  t.is(peers.maxPeers, 16)
  t.is(peers.dialTarget, 6)
  t.is(policy({ maxPeers: 4 }).policy.dialTarget, 2)
})

const fills: Array<{ name: string, connected: number, dialing: number, offered: number, caches?: number[], dials: number, first?: string[] }> = [
  { name: 'an agent alone dials up to its target', connected: 0, dialing: 0, offered: 100, dials: 12 },
  { name: 'connections and dials under way count', connected: 5, dialing: 3, offered: 100, dials: 4 },
  { name: 'at the target nobody is dialed', connected: 12, dialing: 0, offered: 100, dials: 0 },
  { name: 'over the target (peers dialed in) nobody is dialed', connected: 15, dialing: 0, offered: 100, dials: 0 },
  { name: 'fewer candidates than room: all of them', connected: 2, dialing: 0, offered: 4, dials: 4 },
  { name: 'site caches are dialed first', connected: 10, dialing: 0, offered: 50, caches: [17, 33], dials: 2, first: ['c17', 'c33'] }
]
for (const row of fills) {
  test(`fill: ${row.name}`, t => {
    const { policy: peers } = policy({ rotationIntervalMs: 0, dialTarget: 12 })
    const plan = peers.plan(connectedPeers(row.connected), candidates(row.offered, row.caches), row.dialing)
    t.is(plan.dial.length, row.dials)
    t.deepEqual(plan.drop, [])
    t.is(new Set(plan.dial).size, plan.dial.length, 'no peer twice')
    if (row.first !== undefined) t.deepEqual([...plan.dial].sort(), row.first)
  })
}

test('fill: the peers dialed are spread over the candidates, not the first ones listed', t => {
  const { policy: peers } = policy({ rotationIntervalMs: 0, dialTarget: 12 })
  const chosen = new Set<string>()
  for (let round = 0; round < 20; round++) for (const peer of peers.plan([], candidates(100)).dial) chosen.add(peer)
  t.true(chosen.size > 60, `${chosen.size} of 100 candidates chosen over 20 plans`)
})

test('over the bound (a burst of inbound connections): the least useful go, site caches last', t => {
  const { policy: peers } = policy({ maxPeers: 4, rotationIntervalMs: 0 })
  const connected: ConnectedPeer[] = [
    { peer: 'cache', since: 0, usefulChunks: 0, siteCache: true },
    { peer: 'useful', since: 0, usefulChunks: 9, siteCache: false },
    { peer: 'old', since: 0, usefulChunks: 0, siteCache: false },
    { peer: 'young', since: 500, usefulChunks: 0, siteCache: false },
    { peer: 'some', since: 0, usefulChunks: 2, siteCache: false },
    { peer: 'newest', since: 900, usefulChunks: 0, siteCache: false }
  ]
  t.deepEqual(peers.plan(connected, candidates(10)).drop, ['old', 'young'])
})

test('rotation: due once per interval (jittered between ¾ and 1¼ of it), it swaps the least useful, oldest connection for a new peer', t => {
  const { policy: peers, advance, at } = policy({ rotationIntervalMs: 30_000, minConnectionAgeMs: 10_000, dialTarget: 12 })
  const due = peers.nextRotationAt
  t.true(due >= 22_500 && due <= 37_500)
  const connected: ConnectedPeer[] = [
    ...connectedPeers(9, { usefulChunks: 3 }),
    { peer: 'idle-old', since: 0, usefulChunks: 0, siteCache: false },
    { peer: 'idle-newer', since: 5_000, usefulChunks: 0, siteCache: false },
    { peer: 'cache', since: 0, usefulChunks: 0, siteCache: true }
  ]
  advance(due - 1)
  t.deepEqual(peers.plan(connected, candidates(5)), { dial: [], drop: [] }, 'not before it is due')
  advance(1)
  const plan = peers.plan(connected, candidates(5))
  t.deepEqual(plan.drop, ['idle-old'])
  t.is(plan.dial.length, 1)
  t.true(peers.nextRotationAt >= at() + 22_500 && peers.nextRotationAt <= at() + 37_500)
  t.deepEqual(peers.plan(connected, candidates(5)), { dial: [], drop: [] }, 'once per interval')
})

const rotations: Array<{ name: string, connected: ConnectedPeer[], offered: number, drop: string[] }> = [
  { name: 'no candidate: nothing is dropped', connected: connectedPeers(12, { since: -60_000 }), offered: 0, drop: [] },
  { name: 'below the target: the room is filled, nothing dropped', connected: connectedPeers(6, { since: -60_000 }), offered: 20, drop: [] },
  { name: 'connections too young to have shown their use are kept', connected: connectedPeers(12, { since: 25_000 }), offered: 20, drop: [] },
  { name: 'a site cache is never rotated out', connected: connectedPeers(12, { since: -60_000, siteCache: true }), offered: 20, drop: [] },
  {
    name: 'a peer holding what this agent lacks is kept over an idle one',
    connected: [...connectedPeers(11, { since: -60_000, usefulChunks: 5 }), { peer: 'idle', since: -30_000, usefulChunks: 0, siteCache: false }],
    offered: 20,
    drop: ['idle']
  }
]
for (const row of rotations) {
  test(`rotation: ${row.name}`, t => {
    const { policy: peers, advance } = policy({ rotationIntervalMs: 30_000, minConnectionAgeMs: 10_000, dialTarget: 12 })
    advance(peers.nextRotationAt)
    const plan = peers.plan(row.connected, candidates(row.offered))
    t.deepEqual(plan.drop, row.drop)
    t.is(plan.dial.length, row.drop.length + Math.max(0, Math.min(row.offered, 12 - row.connected.length)))
  })
}

test('a rotation interval of 0 never rotates', t => {
  const { policy: peers, advance } = policy({ rotationIntervalMs: 0 })
  t.is(peers.nextRotationAt, Number.POSITIVE_INFINITY)
  advance(10 ** 9)
  t.deepEqual(peers.plan(connectedPeers(12, { since: -1 }), candidates(20)), { dial: [], drop: [] })
})

/**
 * A site of 200 agents, each running the policy over everyone, with the
 * inbound bound enforced as the node does: every agent stays at or under the
 * bound, and the connections form one connected overlay before and after
 * rotations.
 */
test('a site of 200 agents: every agent at or under the bound, one connected overlay through rotations', t => {
  let time = 0
  let seed = 7
  const random = (): number => { seed = (seed * 16807) % 2147483647; return (seed - 1) / 2147483646 }
  const count = 200
  const ids = Array.from({ length: count }, (_, i) => `a${i}`)
  const policies = new Map(ids.map(id => [id, new PeerSetPolicy({ now: () => time, random })]))
  const links = new Map(ids.map(id => [id, new Map<string, number>()]))
  const connect = (from: string, to: string): void => {
    if (links.get(to)!.size >= 16 || links.get(from)!.size >= 16) return
    links.get(from)!.set(to, time)
    links.get(to)!.set(from, time)
  }
  const step = (): void => {
    for (const id of ids) {
      const mine = links.get(id)!
      const connected = [...mine].map(([peer, since]) => ({ peer, since, usefulChunks: 0, siteCache: false }))
      const offered = ids.filter(other => other !== id && !mine.has(other)).map(peer => ({ peer, siteCache: false }))
      const plan = policies.get(id)!.plan(connected, offered)
      for (const peer of plan.drop) { mine.delete(peer); links.get(peer)!.delete(id) }
      for (const peer of plan.dial) connect(id, peer)
    }
  }
  const components = (): number => {
    const seen = new Set<string>()
    let found = 0
    for (const id of ids) {
      if (seen.has(id)) continue
      found++
      const stack = [id]
      seen.add(id)
      while (stack.length > 0) for (const next of links.get(stack.pop()!)!.keys()) if (!seen.has(next)) { seen.add(next); stack.push(next) }
    }
    return found
  }
  for (let minute = 0; minute < 10; minute++) {
    for (let tick = 0; tick < 6; tick++) { time += 10_000; step() }
    t.true(ids.every(id => links.get(id)!.size <= 16), 'at or under the bound')
    t.is(components(), 1, `one overlay after ${minute + 1} min`)
  }
  const degrees = ids.map(id => links.get(id)!.size)
  t.true(Math.min(...degrees) >= 6, `every agent keeps peers (least: ${Math.min(...degrees)})`)
})

const fellow = (peer: string, since = 0): ConnectedPeer => ({ peer, since, usefulChunks: 0, siteCache: false, originFetcher: true })

test('fellow origin fetchers: dialed at once up to all but two of the bound, past it in place of the least useful connections, young ones too', t => {
  const { policy: peers } = policy({ rotationIntervalMs: 0, maxPeers: 8, minConnectionAgeMs: 10_000 })
  const connected: ConnectedPeer[] = [
    fellow('f0'),
    { peer: 'useful', since: 0, usefulChunks: 5, siteCache: false },
    { peer: 'cache', since: 0, usefulChunks: 0, siteCache: true },
    { peer: 'idle-young', since: 0, usefulChunks: 0, siteCache: false }
  ]
  const offered: DialCandidate[] = [
    { peer: 'f1', siteCache: false, originFetcher: true },
    { peer: 'f2', siteCache: false, originFetcher: true },
    { peer: 'f3', siteCache: false, originFetcher: true },
    { peer: 'f4', siteCache: false, originFetcher: true },
    { peer: 'f5', siteCache: false, originFetcher: true },
    { peer: 'f6', siteCache: false, originFetcher: true },
    { peer: 'other', siteCache: false }
  ]
  const plan = peers.plan(connected, offered)
  t.deepEqual(plan.drop, ['idle-young', 'useful'], 'the least useful first; site caches and fellows kept')
  t.is(plan.dial.length, 4, 'two fill the room up to six connections, two replace others; none replaces a site cache or a fellow')
  t.true(plan.dial.every(peer => peer.startsWith('f')))
})

test('fellow origin fetchers are never rotated out', t => {
  const { policy: peers, advance } = policy({ rotationIntervalMs: 30_000, dialTarget: 2, maxPeers: 4 })
  advance(peers.nextRotationAt)
  t.deepEqual(peers.plan([fellow('f0', -60_000), fellow('f1', -60_000)], candidates(3)), { dial: [], drop: [] })
})
