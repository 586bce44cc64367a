import test from 'ava'
import { createHash } from 'node:crypto'
import { RelayElection } from '../../agent/status/election.js'

const SALT = 'meshdeploy/status/1/0123456789abcdef/branch'
const score = (peer: string): string => createHash('sha256').update(`${SALT}\n${peer}`).digest('hex')
/** Peers sorted by their score: the first is whom everyone elects when all reach the coordinator. */
const PEERS = ['peer-a', 'peer-b', 'peer-c', 'peer-d'].sort((a, b) => score(a).localeCompare(score(b)))
const [LOW, SECOND, THIRD, HIGH] = PEERS

interface Step {
  /** Clock at the step, ms. */
  at: number
  heard?: Array<[peer: string, reaches: boolean]>
  left?: string[]
  selfReaches?: boolean
  /** The relay expected after the step. */
  relay: string | undefined
}

function run (self: string, steps: Step[], livenessMs = 5000): Array<string | undefined> {
  let now = 0
  const election = new RelayElection({ self, salt: SALT, livenessMs, now: () => now })
  return steps.map(step => {
    now = step.at
    for (const [peer, reaches] of step.heard ?? []) election.heard(peer, reaches)
    for (const peer of step.left ?? []) election.left(peer)
    if (step.selfReaches !== undefined) election.setSelfReaches(step.selfReaches)
    return election.relay()
  })
}

const cases: Array<{ name: string, self: string, steps: Step[] }> = [
  {
    name: 'alone and reaching the coordinator: itself',
    self: HIGH,
    steps: [{ at: 0, relay: undefined }, { at: 10, selfReaches: true, relay: HIGH }]
  },
  {
    name: 'the lowest score among those that reach the coordinator',
    self: HIGH,
    steps: [{ at: 0, selfReaches: true, heard: [[SECOND, true], [THIRD, true]], relay: SECOND }, { at: 100, heard: [[LOW, true]], relay: LOW }]
  },
  {
    name: 'a peer that does not reach the coordinator is passed over',
    self: HIGH,
    steps: [{ at: 0, selfReaches: true, heard: [[LOW, false], [THIRD, true]], relay: THIRD }]
  },
  {
    name: 'nobody reaches the coordinator: no relay, every agent on its own',
    self: THIRD,
    steps: [{ at: 0, selfReaches: false, heard: [[LOW, false], [SECOND, false]], relay: undefined }]
  },
  {
    name: 'a relay whose heartbeats stop is replaced once its liveness runs out, not before',
    self: HIGH,
    steps: [
      { at: 0, selfReaches: true, heard: [[LOW, true], [SECOND, true]], relay: LOW },
      { at: 3000, heard: [[SECOND, true]], relay: LOW },
      { at: 4999, relay: LOW },
      { at: 5000, relay: SECOND }
    ]
  },
  {
    name: 'a relay that disconnects is replaced at once',
    self: HIGH,
    steps: [{ at: 0, selfReaches: true, heard: [[LOW, true], [SECOND, true]], relay: LOW }, { at: 10, left: [LOW], relay: SECOND }]
  },
  {
    name: 'a relay that loses the coordinator says so and is replaced; it returns and takes the role back',
    self: HIGH,
    steps: [
      { at: 0, selfReaches: true, heard: [[LOW, true], [THIRD, true]], relay: LOW },
      { at: 1500, heard: [[LOW, false]], relay: THIRD },
      { at: 3000, heard: [[LOW, true]], relay: LOW }
    ]
  },
  {
    name: 'this agent is the relay while it has the lowest score and reaches the coordinator',
    self: LOW,
    steps: [
      { at: 0, selfReaches: true, heard: [[SECOND, true]], relay: LOW },
      { at: 10, selfReaches: false, relay: SECOND },
      { at: 20, selfReaches: true, relay: LOW }
    ]
  },
  {
    name: 'the agent\'s own heartbeat does not make it a candidate twice',
    self: SECOND,
    steps: [{ at: 0, selfReaches: false, heard: [[SECOND, true]], relay: undefined }]
  }
]

for (const { name, self, steps } of cases) {
  test(`relay election: ${name}`, t => {
    t.deepEqual(run(self, steps), steps.map(step => step.relay))
  })
}

test('relay election: agents that heard the same heartbeats elect the same relay', t => {
  let now = 0
  const elections = PEERS.map(self => new RelayElection({ self, salt: SALT, now: () => now }))
  for (const election of elections) {
    election.setSelfReaches(election.self !== LOW)
    for (const peer of PEERS) election.heard(peer, peer !== LOW)
  }
  t.deepEqual(elections.map(election => election.relay()), PEERS.map(() => SECOND))
  now = 10
  t.deepEqual(elections.map(election => election.isRelay()), PEERS.map(peer => peer === SECOND))
})

test('relay election: another salt (another site) orders the peers differently', t => {
  const orders = new Set<string>()
  for (const site of ['a', 'b', 'c', 'd', 'e', 'f']) {
    const election = new RelayElection({ self: 'x', salt: `meshdeploy/status/1/00/${site}`, now: () => 0 })
    for (const peer of PEERS) election.heard(peer, true)
    orders.add(election.relay()!)
  }
  t.true(orders.size > 1, 'the same peers do not always win')
})

test('relay election: the next expiry is the earliest live peer\'s', t => {
  let now = 0
  const election = new RelayElection({ self: 'x', salt: SALT, livenessMs: 1000, now: () => now })
  t.is(election.nextExpiryAt(), undefined)
  election.heard('a', true)
  now = 300
  election.heard('b', true)
  t.is(election.nextExpiryAt(), 1000)
  now = 1000
  t.is(election.nextExpiryAt(), 1300)
  t.deepEqual(election.livePeers(), ['b'])
})

/**
 * Heartbeats that matter: only the relay and its standbys speak; when those
 * ahead go quiet (their heartbeats age out) or leave, the next in line
 * speaks up. The table runs the same clock for the agent ranked fourth.
 */
const heartbeats: Array<{ name: string, at: number, heard?: Array<[string, boolean]>, left?: string[], selfReaches?: boolean, speaks: boolean }> = [
  { name: 'alone and reaching the coordinator: it speaks', at: 0, speaks: true },
  { name: 'two ahead of it heard: still among the relay and its two standbys', at: 100, heard: [[LOW, true], [SECOND, true]], speaks: true },
  { name: 'a third ahead that does not reach the coordinator does not count', at: 200, heard: [[THIRD, false]], speaks: true },
  { name: 'three ahead that reach it: quiet', at: 300, heard: [[THIRD, true]], speaks: false },
  { name: 'the relay leaves: the fourth speaks up at once', at: 400, left: [LOW], speaks: true },
  { name: 'the relay is heard again: quiet', at: 500, heard: [[LOW, true]], speaks: false },
  { name: 'heartbeats of those ahead age out: it speaks up', at: 5350, heard: [[LOW, true], [SECOND, true]], speaks: true },
  { name: 'an agent that does not reach the coordinator never heartbeats on its own', at: 5400, selfReaches: false, speaks: false }
]
test('heartbeats: only the relay and its standbys speak, and the next in line takes over when they go quiet', t => {
  let now = 0
  const election = new RelayElection({ self: HIGH, salt: SALT, livenessMs: 5000, now: () => now })
  election.setSelfReaches(true)
  for (const step of heartbeats) {
    now = step.at
    for (const [peer, reaches] of step.heard ?? []) election.heard(peer, reaches)
    for (const peer of step.left ?? []) election.left(peer)
    if (step.selfReaches !== undefined) election.setSelfReaches(step.selfReaches)
    t.is(election.shouldHeartbeat(), step.speaks, step.name)
  }
})

test('heartbeats: in a site of 1,000 agents that heard each other once, three keep speaking', t => {
  const now = 0
  const peers = Array.from({ length: 1000 }, (_, i) => `peer-${i}`)
  const elections = peers.map(self => new RelayElection({ self, salt: SALT, now: () => now }))
  for (const election of elections) {
    election.setSelfReaches(true)
    for (const peer of peers) election.heard(peer, true)
  }
  t.is(elections.filter(election => election.shouldHeartbeat()).length, 3)
})
