import test from 'ava'
import { pino } from 'pino'
import { RefusalLog, type Refusal } from '../../agent/refusals.js'

function clock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let time = start
  return { now: () => time, advance: ms => { time += ms } }
}

/** A refusal log writing JSON lines into an array. */
function capture (init: { repeatWindowMs?: number, maxKeys?: number } = {}): { log: RefusalLog, lines: any[], time: ReturnType<typeof clock> } {
  const lines: any[] = []
  const time = clock()
  const logger = pino({ level: 'info' }, { write: (line: string) => { lines.push(JSON.parse(line)) } })
  return { log: new RefusalLog({ logger, now: time.now, ...init }), lines, time }
}

const flood: Refusal = { subject: 'peer', reason: 'peer-not-allowed', peer: 'peer-a', message: 'inbound connection refused by the gater' }

test('a refusal is logged once with its reason as fields; identical ones within the window are counted and reported with the next line', t => {
  const { log, lines, time } = capture({ repeatWindowMs: 60_000 })
  const emitted: Refusal[] = []
  log.on('refused', refusal => { emitted.push(refusal) })
  for (let index = 0; index < 500; index++) log.refuse(flood)
  t.is(lines.length, 1, 'a peer hammering the agent costs one line')
  t.like(lines[0], { level: 40, refused: 'peer', reason: 'peer-not-allowed', peer: 'peer-a', msg: 'refused peer: inbound connection refused by the gater' })
  t.is(emitted.length, 500, 'every refusal is still an event')
  time.advance(60_000)
  log.refuse(flood)
  t.is(lines.length, 2)
  t.is(lines[1].repeated, 499, 'the next line says how many were not logged')
})

test('refusals that differ in subject, reason, peer, address host or task are logged apart; a new port is the same source', t => {
  const { log, lines } = capture()
  const table: Refusal[] = [
    flood,
    { ...flood, reason: 'peer-banned' },
    { ...flood, peer: 'peer-b' },
    { subject: 'peer', reason: 'psk-mismatch', address: '/ip4/10.0.0.5/tcp/40001', message: 'another key' },
    { subject: 'peer', reason: 'psk-mismatch', address: '/ip4/10.0.0.5/tcp/40002', message: 'another key' },
    { subject: 'peer', reason: 'psk-mismatch', address: '/ip4/10.0.0.6/tcp/40001', message: 'another key' },
    { subject: 'manifest', reason: 'expired', taskId: 't1', message: 'expired' },
    { subject: 'manifest', reason: 'expired', taskId: 't2', message: 'expired' },
    { subject: 'chunk', reason: 'hash-mismatch', peer: 'peer-a', index: 3, message: 'fails its hash', details: { expected: 'aa', actual: 'bb' } }
  ]
  for (const refusal of table) log.refuse(refusal, refusal.subject === 'manifest' ? 'error' : 'warn')
  t.deepEqual(lines.map(line => `${line.refused}/${line.reason}/${line.peer ?? line.address ?? line.taskId}`), [
    'peer/peer-not-allowed/peer-a',
    'peer/peer-banned/peer-a',
    'peer/peer-not-allowed/peer-b',
    'peer/psk-mismatch//ip4/10.0.0.5/tcp/40001',
    'peer/psk-mismatch//ip4/10.0.0.6/tcp/40001',
    'manifest/expired/t1',
    'manifest/expired/t2',
    'chunk/hash-mismatch/peer-a'
  ])
  t.like(lines.at(-1), { index: 3, expected: 'aa', actual: 'bb' })
  t.is(lines[5].level, 50, 'the level the caller asks for')
})

test('the memory of refusals is bounded: the oldest are forgotten first', t => {
  const { log, lines } = capture({ maxKeys: 10 })
  for (let index = 0; index < 20; index++) log.refuse({ ...flood, peer: `peer-${index}` })
  log.refuse({ ...flood, peer: 'peer-19' })
  t.is(lines.length, 20, 'a recent one is still remembered')
  log.refuse({ ...flood, peer: 'peer-0' })
  t.is(lines.length, 21, 'an old one was forgotten and is logged again')
})
