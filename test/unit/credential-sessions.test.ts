import test from 'ava'
import { CredentialSessions, type SessionSighting } from '../../coordinator/devices/credential-sessions.js'

interface Case {
  name: string
  /** Requests of one device in order, one second apart unless `at` says when (ms). */
  requests: Array<SessionSighting & { at?: number }>
  /** Index of the request whose note answers a finding; undefined: none does. */
  flaggedAt?: number
}

const A = { session: 'ses-aaaaaaaa', address: '10.0.0.5' }
const B = { session: 'ses-bbbbbbbb', address: '10.9.0.7' }
const alternate = (count: number, ...sightings: SessionSighting[]): SessionSighting[] => Array.from({ length: count }, (_, index) => sightings[index % sightings.length])

const cases: Case[] = [
  { name: 'one agent polling for an hour', requests: alternate(3600, A) },
  { name: 'an agent restarted: its old session never comes back', requests: [...alternate(10, A), ...alternate(10, { ...A, session: 'ses-restart1' }), ...alternate(10, { ...A, session: 'ses-restart2' })] },
  { name: 'a copied agent.json on another machine, the two polling in turn', requests: alternate(20, A, B), flaggedAt: 5 },
  { name: 'a copied agent.json behind the same NAT: the session ids tell them apart', requests: alternate(20, A, { ...B, address: A.address }), flaggedAt: 5 },
  { name: 'a stolen credential used without a session id from another address, in turns with the agent', requests: alternate(20, A, { address: '198.51.100.9' }), flaggedAt: 5 },
  { name: 'the agent\'s own requests without a session id from its address belong to its session', requests: alternate(40, A, { address: A.address }) },
  { name: 'one-shot commands on the device (each a new session) between the agent\'s polls', requests: Array.from({ length: 40 }, (_, index) => index % 2 === 0 ? A : { session: `ses-cli${String(index).padStart(5, '0')}`, address: A.address }) },
  { name: 'a laptop that roams once to another address, the session id unchanged', requests: [...alternate(10, A), ...alternate(10, { ...A, address: '192.168.1.20' })] },
  { name: 'an older agent (no session id) that roams once', requests: [...alternate(10, { address: A.address }), ...alternate(10, { address: '192.168.1.20' })] },
  {
    name: 'two sessions taking turns, but hours apart: each window sees one',
    requests: [A, B, A, B].map((sighting, index) => ({ ...sighting, at: index * 3600_000 }))
  }
]

for (const kase of cases) {
  test(`credential sessions: ${kase.name} → ${kase.flaggedAt === undefined ? 'not flagged' : `flagged at request ${kase.flaggedAt + 1}`}`, t => {
    let now = 0
    const sessions = new CredentialSessions({ now: () => now })
    const flagged: number[] = []
    for (const [index, request] of kase.requests.entries()) {
      now = request.at ?? index * 1000
      const { at: _at, ...sighting } = request
      if (sessions.note('dev-1', sighting) !== undefined) flagged.push(index)
    }
    t.deepEqual(flagged, kase.flaggedAt === undefined ? [] : [kase.flaggedAt], 'a finding once per window')
  })
}

test('credential sessions: a finding names the sessions and their addresses, and comes again once a window passed', t => {
  let now = 0
  const sessions = new CredentialSessions({ now: () => now, windowMs: 60_000 })
  let finding
  for (let index = 0; index < 6; index++) {
    now = index * 1000
    finding = sessions.note('dev-1', index % 2 === 0 ? A : B) ?? finding
  }
  t.like(finding, { deviceId: 'dev-1', detectedAt: 5000, sessions: 2, seen: 2 })
  t.deepEqual(finding!.addresses, [B.address, A.address])
  const again: number[] = []
  for (let index = 6; index < 200; index++) {
    now = index * 1000
    if (sessions.note('dev-1', index % 2 === 0 ? A : B) !== undefined) again.push(now)
  }
  t.deepEqual(again, [65_000, 125_000, 185_000])
})

test('credential sessions: devices quiet for a window are let go, so memory follows the devices heard from lately', t => {
  let now = 0
  const sessions = new CredentialSessions({ now: () => now, windowMs: 60_000 })
  for (let index = 0; index < 1000; index++) sessions.note(`dev-${index}`, A)
  t.is(sessions.size, 1000)
  now = 61_000
  sessions.note('dev-late', A)
  t.is(sessions.size, 1)
  sessions.forget('dev-late')
  t.is(sessions.size, 0)
})

test('credential sessions: a device flooding new session ids keeps at most eight', t => {
  let now = 0
  const sessions = new CredentialSessions({ now: () => now })
  for (let index = 0; index < 10_000; index++) {
    now = index
    sessions.note('dev-1', { session: `ses-${String(index).padStart(8, '0')}`, address: A.address })
  }
  t.is((sessions as any).devices.get('dev-1').sessions.size, 8)
})

test('credential sessions: three status records that conflict with stored ones within the window flag the credential; fewer, or spread wider, do not', t => {
  let now = 0
  const sessions = new CredentialSessions({ now: () => now, windowMs: 60_000 })
  sessions.note('dev-1', A)
  t.is(sessions.noteConflict('dev-1'), undefined, 'one conflict may follow a crash that lost a record')
  now = 50_000
  t.is(sessions.noteConflict('dev-1'), undefined)
  now = 120_000
  t.is(sessions.noteConflict('dev-1'), undefined, 'the first two are out of the window by now')
  now = 121_000
  t.is(sessions.noteConflict('dev-1'), undefined)
  now = 122_000
  t.like(sessions.noteConflict('dev-1'), { deviceId: 'dev-1', evidence: 'conflicting-status-records', sessions: 2, detectedAt: 122_000 })
  t.is(sessions.noteConflict('dev-2'), undefined, 'per device')
})
