import test from 'ava'
import { TokenBucket, MAX_BURST_BYTES } from '../../agent/download/token-bucket.js'

function fakeClock (start = 0): { now: () => number, advance: (ms: number) => void } {
  let time = start
  return { now: () => time, advance: ms => { time += ms } }
}

test('the burst is at most 64 KiB and a twentieth of the rate', t => {
  t.is(new TokenBucket({ bytesPerSecond: 10_000_000 }).burstBytes, MAX_BURST_BYTES)
  t.is(new TokenBucket({ bytesPerSecond: 100_000 }).burstBytes, 5000)
})

test('reservations within the burst pass at once, beyond it they wait exactly', t => {
  const clock = fakeClock()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now })
  t.is(bucket.reserve(100), 0)
  t.is(bucket.reserve(50), 50)
  t.is(bucket.reserve(50), 100)
  clock.advance(100)
  t.is(bucket.reserve(10), 10)
})

test('idle time refills no more than the burst', t => {
  const clock = fakeClock()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now })
  clock.advance(60_000)
  t.is(bucket.reserve(100), 0)
  t.is(bucket.reserve(1), 1)
})

test('a refund returns unused bytes', t => {
  const clock = fakeClock()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now })
  t.is(bucket.reserve(300), 200)
  bucket.refund(200)
  t.is(bucket.reserve(0), 0)
})

/** Simulates one consumer that takes pieces as soon as the bucket lets it, and returns the grant times. */
function simulate (bytesPerSecond: number, pieceBytes: number, durationMs: number): Array<{ at: number, bytes: number }> {
  const clock = fakeClock()
  const bucket = new TokenBucket({ bytesPerSecond, now: clock.now })
  const grants: Array<{ at: number, bytes: number }> = []
  let next = 0
  while (next <= durationMs) {
    clock.advance(next - clock.now())
    const wait = bucket.reserve(pieceBytes)
    grants.push({ at: clock.now() + wait, bytes: pieceBytes })
    next = clock.now() + wait
  }
  return grants
}

for (const [rate, piece] of [[2_000_000, 65536], [2_000_000, 1000], [100_000, 5000], [50_000_000, 65536]] as const) {
  test(`at ${rate} B/s in pieces of ${piece} B no one-second window exceeds the rate by more than 5%`, t => {
    const durationMs = 20_000
    const grants = simulate(rate, piece, durationMs)
    let worst = 0
    for (let start = 0; start + 1000 <= durationMs; start += 10) {
      const bytes = grants.filter(grant => grant.at >= start && grant.at < start + 1000).reduce((sum, grant) => sum + grant.bytes, 0)
      worst = Math.max(worst, bytes)
    }
    const total = grants.filter(grant => grant.at < durationMs).reduce((sum, grant) => sum + grant.bytes, 0)
    t.true(worst <= rate * 1.05, `worst window ${worst} B`)
    t.true(total / (durationMs / 1000) >= rate * 0.95, `average ${total / (durationMs / 1000)} B/s`)
  })
}
