import test from 'ava'
import { PeerBook } from '../../agent/p2p/peer-book.js'
import { PeerGate } from '../../agent/p2p/gater.js'

function book (): { book: PeerBook, advance: (ms: number) => void } {
  let time = 0
  return { book: new PeerBook({ now: () => time, random: () => 0, firstRetryMs: 1000, maxRetryMs: 8000, maxAddressRetryMs: 8000, mdnsDialAttempts: 2, minConnectionMs: 5000 }), advance: ms => { time += ms } }
}
const all = (): boolean => true

test('listed peers are due at once; failed dials back off doubling up to the ceiling', t => {
  const { book: peers, advance } = book()
  peers.setListed([{ peerId: 'a', addresses: ['/ip4/10.0.0.1/tcp/1'] }])
  t.deepEqual(peers.due(all), [{ peer: 'a', addresses: ['/ip4/10.0.0.1/tcp/1'], failing: [] }])
  const waits: number[] = []
  for (let failure = 0; failure < 5; failure++) {
    peers.dialing('a')
    t.deepEqual(peers.due(all), [], 'not twice at once')
    peers.dialFailed('a')
    waits.push(peers.nextRetryAt()! - 0)
    advance(peers.nextRetryAt()!)
    t.is(peers.due(all).length, 1)
    advance(-peers.nextRetryAt()!)
  }
  t.deepEqual(waits, [1000, 2000, 4000, 8000, 8000])
})

test('the gate filters what is due; a new address makes a peer due again', t => {
  const { book: peers } = book()
  peers.setListed([{ peerId: 'a', addresses: ['/ip4/10.0.0.1/tcp/1'] }])
  t.deepEqual(peers.due(peer => peer !== 'a'), [])
  peers.dialing('a')
  peers.dialFailed('a')
  t.deepEqual(peers.due(all), [])
  peers.setListed([{ peerId: 'a', addresses: ['/ip4/10.0.0.9/tcp/1'] }])
  t.deepEqual(peers.due(all).map(entry => entry.addresses), [['/ip4/10.0.0.9/tcp/1']])
})

test('an mDNS sighting is forgotten after failed dials; a listed peer never is', t => {
  const { book: peers } = book()
  peers.discovered('m', ['/ip4/10.0.0.2/tcp/1'])
  peers.setListed([{ peerId: 'l', addresses: [] }])
  for (let i = 0; i < 2; i++) { peers.dialing('m'); peers.dialFailed('m'); peers.dialing('l'); peers.dialFailed('l') }
  t.false(peers.has('m'))
  t.true(peers.has('l'))
  peers.setListed([])
  t.false(peers.has('l'), 'a peer no longer listed and not connected is dropped')
})

test('a connection dropped right away counts as a failure; a lasting one does not', t => {
  const { book: peers, advance } = book()
  peers.setListed([{ peerId: 'a', addresses: [] }])
  peers.connected('a')
  advance(100)
  peers.disconnected('a')
  const quick = peers.nextRetryAt()! - 100
  peers.connected('a')
  advance(10_000)
  peers.disconnected('a')
  t.is(quick, 1000)
  t.is(peers.nextRetryAt()! - 10_100, 1000)
  peers.connected('a')
  advance(10)
  peers.disconnected('a')
  peers.connected('a')
  advance(10)
  peers.disconnected('a')
  t.is(peers.nextRetryAt()! - 10_120, 2000, 'two quick drops in a row wait longer')
})

test('the gate admits allow-listed peers that no download bans, and reports who lost their place', t => {
  const banned = new Set<string>()
  const gate = new PeerGate({ isBanned: peer => banned.has(peer) })
  t.false(gate.allows('a'))
  t.deepEqual(gate.setAllowed(['a', 'b']), [])
  t.true(gate.allows('a'))
  banned.add('a')
  t.false(gate.allows('a'))
  t.deepEqual(gate.setAllowed(['b', 'c']), ['a'])
  const gater = gate.connectionGater()
  const id = (value: string): any => ({ toString: () => value })
  t.false(gater.denyDialPeer!(id('b')) as boolean)
  t.true(gater.denyInboundEncryptedConnection!(id('z'), {} as any) as boolean)
})

test('a peer this agent hung up on is not dialed again before the hold ends, whatever its sightings or drops say', t => {
  let time = 0
  const peers = new PeerBook({ now: () => time, random: () => 0, firstRetryMs: 1000, maxRetryMs: 8000, hungUpHoldMs: 30_000 })
  peers.setListed([{ peerId: 'a', addresses: ['/ip4/10.0.0.1/tcp/1'] }])
  peers.connected('a')
  time = 10_000
  peers.hungUp('a')
  peers.disconnected('a')
  peers.discovered('a', ['/ip4/10.0.0.1/tcp/1'])
  t.is(peers.nextRetryAt(), 40_000)
  time = 39_999
  t.deepEqual(peers.due(all), [])
  time = 40_000
  t.deepEqual(peers.due(all).map(entry => entry.peer), ['a'])
  peers.hungUp('unknown')
  t.false(peers.has('unknown'), 'a peer the book does not know is not added by a hang-up')
})
