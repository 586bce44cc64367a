import test from 'ava'
import { RateLimiter } from '../../protocol/rate-limiter.js'

function clock (start = 0): { now: () => number, advance: (ms: number) => void } {
  let time = start
  return { now: () => time, advance: ms => { time += ms } }
}

/** Each row: at time `atMs`, a request by `key` → allowed, or refused with this retryAfterMs. */
const timeline: Array<[atMs: number, key: string, expected: true | number]> = [
  [0, 'a', true], [0, 'a', true], [0, 'a', true], // the burst of 3
  [0, 'a', 500], // 2/s: the next token in 500 ms
  [0, 'b', true], // another key has its own bucket
  [250, 'a', 250],
  [500, 'a', true],
  [500, 'a', 500],
  [10_000, 'a', true], [10_000, 'a', true], [10_000, 'a', true], // idle time refills the burst and no more
  [10_000, 'a', 500]
]

test('a bucket per key: a burst, then the sustained rate, with exact waits', t => {
  const time = clock()
  const limiter = new RateLimiter({ requestsPerSecond: 2, burst: 3, now: time.now })
  for (const [index, [atMs, key, expected]] of timeline.entries()) {
    time.advance(atMs - time.now())
    const decision = limiter.take(key)
    if (expected === true) t.true(decision.allowed, `row ${index}`)
    else t.deepEqual(decision, { allowed: false, retryAfterMs: expected }, `row ${index}`)
  }
})

test('a refused request costs nothing', t => {
  const time = clock()
  const limiter = new RateLimiter({ requestsPerSecond: 1, burst: 1, now: time.now })
  t.true(limiter.take('a').allowed)
  for (let index = 0; index < 10; index++) t.false(limiter.take('a').allowed)
  time.advance(1000)
  t.true(limiter.take('a').allowed, 'the hammering did not push the next token further away')
})

test('the number of keys tracked is bounded; the least recently seen are forgotten', t => {
  const time = clock()
  const limiter = new RateLimiter({ requestsPerSecond: 1, burst: 1, maxKeys: 3, now: time.now })
  for (const key of ['a', 'b', 'c']) limiter.take(key)
  limiter.take('a')
  limiter.take('d')
  t.is(limiter.size, 3)
  t.false(limiter.take('a').allowed, 'a was seen recently and kept its empty bucket')
  t.true(limiter.take('b').allowed, 'b was forgotten and starts full')
})

test('a clock that goes backwards refills nothing', t => {
  const time = clock(10_000)
  const limiter = new RateLimiter({ requestsPerSecond: 1, burst: 1, now: time.now })
  t.true(limiter.take('a').allowed)
  time.advance(-5000)
  t.false(limiter.take('a').allowed)
})

test('nonsensical rules are refused', t => {
  t.throws(() => new RateLimiter({ requestsPerSecond: 0, burst: 1 }), { name: 'RangeError' })
  t.throws(() => new RateLimiter({ requestsPerSecond: 1, burst: 0 }), { name: 'RangeError' })
})
