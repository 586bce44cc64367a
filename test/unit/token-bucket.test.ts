import test from 'ava'
import { TokenBucket, MAX_BURST_BYTES, DEFAULT_WIRE_OVERHEAD, type Grant } from '../../agent/download/token-bucket.js'

function fakeClock (start = 0): { now: () => number, advance: (ms: number) => void } {
  let time = start
  return { now: () => time, advance: ms => { time += ms } }
}

/** A clock and timers that move only when the test says so; `advance` runs what falls due, in order, letting promises settle between. */
class FakeTimers {
  time = 0
  private next = 0
  private readonly timers = new Map<number, { at: number, run: () => void }>()
  readonly now = (): number => this.time
  readonly schedule = (ms: number, run: () => void): (() => void) => {
    const id = this.next++
    this.timers.set(id, { at: this.time + Math.max(0, ms), run })
    return () => { this.timers.delete(id) }
  }

  /** Moves time on without running timers (a process that was not scheduled). */
  stall (ms: number): void {
    this.time += ms
  }

  async advance (ms: number): Promise<void> {
    const until = this.time + ms
    await settle()
    for (;;) {
      let due: [number, { at: number, run: () => void }] | undefined
      for (const entry of this.timers) if (entry[1].at <= until && (due === undefined || entry[1].at < due[1].at)) due = entry
      if (due === undefined) break
      this.timers.delete(due[0])
      this.time = Math.max(this.time, due[1].at)
      due[1].run()
      await settle()
    }
    this.time = until
    await settle()
  }
}

async function settle (): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve()
}

const noOverhead = { wireOverhead: 0 }

test('pieces are at most 64 KiB and a twentieth of the payload rate; the burst adds what the rate brings in 10 ms', t => {
  const fast = new TokenBucket({ bytesPerSecond: 10_000_000, ...noOverhead })
  t.is(fast.pieceBytes, MAX_BURST_BYTES)
  t.is(fast.burstBytes, MAX_BURST_BYTES + 100_000)
  t.is(new TokenBucket({ bytesPerSecond: 100_000, ...noOverhead }).burstBytes, 5000)
  t.is(new TokenBucket({ bytesPerSecond: 100_000, ...noOverhead }).pieceBytes, 5000)
  const bucket = new TokenBucket({ bytesPerSecond: 105_000, wireOverhead: 0.05 })
  t.is(bucket.payloadBytesPerSecond, 100_000)
  t.is(bucket.burstBytes, 5000)
  t.is(DEFAULT_WIRE_OVERHEAD, 0.04)
})

test('reservations within the burst pass at once, beyond it they wait exactly', t => {
  const clock = fakeClock()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now, ...noOverhead })
  t.is(bucket.reserve(100), 0)
  t.is(bucket.reserve(50), 50)
  t.is(bucket.reserve(50), 100)
  clock.advance(100)
  t.is(bucket.reserve(10), 10)
})

test('idle time refills no more than the burst', t => {
  const clock = fakeClock()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now, ...noOverhead })
  clock.advance(60_000)
  t.is(bucket.reserve(100), 0)
  t.is(bucket.reserve(1), 1)
})

test('a refund returns unused bytes', t => {
  const clock = fakeClock()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now, ...noOverhead })
  t.is(bucket.reserve(300), 200)
  bucket.refund(200)
  t.is(bucket.reserve(0), 0)
})

test('grants come in request order, the first burst at once, then spaced at the payload rate', async t => {
  const timers = new FakeTimers()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: timers.now, schedule: timers.schedule, ...noOverhead })
  const granted: Array<[number, number]> = []
  for (let i = 0; i < 4; i++) {
    const grant = bucket.acquire(100)
    void grant.granted.then(() => {
      granted.push([i, timers.time])
      grant.finish()
    })
  }
  await timers.advance(1000)
  t.deepEqual(granted, [[0, 0], [1, 100], [2, 200], [3, 300]])
})

test('after a stall the queue does not catch up: one burst, then the rate again', async t => {
  const timers = new FakeTimers()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, windowMs: 10_000, now: timers.now, schedule: timers.schedule, ...noOverhead })
  const granted: number[] = []
  const first = bucket.acquire(100)
  await first.granted
  first.finish()
  for (let i = 0; i < 5; i++) {
    const grant = bucket.acquire(100)
    void grant.granted.then(() => { granted.push(timers.time); grant.finish() })
  }
  // The process was busy for 400 ms: the timer due at 100 ms runs at 400 ms.
  timers.stall(400)
  await timers.advance(1000)
  t.deepEqual(granted, [400, 500, 600, 700, 800])
})

test('bytes in flight count against the window: an answer held back cannot push a window over the budget and a piece', async t => {
  const timers = new FakeTimers()
  // Budget 1000 bytes a second; pieces of 100.
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: timers.now, schedule: timers.schedule, ...noOverhead })
  const grants: Grant[] = []
  const grantedAt: number[] = []
  for (let i = 0; i < 20; i++) {
    const grant = bucket.acquire(100)
    grants.push(grant)
    void grant.granted.then(() => { grantedAt.push(timers.time) })
  }
  // A peer that answers nothing for 2 s: grants stop once a window's budget is in flight.
  await timers.advance(2000)
  t.is(grantedAt.length, 11, 'grants go on while what is in flight fits the budget')
  t.is(bucket.inFlightBytes, 1100)
  // Then everything arrives at once: the window is full, nothing more is granted until it moves on.
  for (const grant of grants.slice(0, 11)) grant.arrived(100)
  t.is(bucket.inFlightBytes, 0)
  t.is(bucket.arrivedInWindowBytes, 1100)
  await timers.advance(990)
  t.is(grantedAt.length, 11, 'no grant while the arrivals are within the window')
  await timers.advance(30)
  t.is(grantedAt.length, 12)
})

test('a transfer that ends early counts what did not arrive as arrived; an unused grant gives everything back', async t => {
  const timers = new FakeTimers()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: timers.now, schedule: timers.schedule, ...noOverhead })
  const used = bucket.acquire(100)
  await used.granted
  used.arrived(30)
  t.is(bucket.inFlightBytes, 70)
  used.finish()
  t.is(bucket.inFlightBytes, 0)
  t.is(bucket.arrivedInWindowBytes, 100, 'the 70 bytes never seen may have crossed the wire')
  await timers.advance(100)
  const unused = bucket.acquire(100)
  await unused.granted
  t.is(bucket.inFlightBytes, 100)
  unused.cancel()
  t.is(bucket.inFlightBytes, 0)
  t.is(bucket.reserve(100), 0, 'its tokens are back')
})

test('a cancelled or aborted request leaves the queue and the next one moves up', async t => {
  const timers = new FakeTimers()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: timers.now, schedule: timers.schedule, ...noOverhead })
  const first = bucket.acquire(100)
  await first.granted
  first.finish()
  const controller = new AbortController()
  const aborted = bucket.acquire(100, controller.signal)
  const cancelled = bucket.acquire(100)
  const last = bucket.acquire(100)
  let lastAt: number | undefined
  void last.granted.then(() => { lastAt = timers.time })
  controller.abort(new Error('stopped'))
  await t.throwsAsync(aborted.granted, { message: 'stopped' })
  cancelled.cancel()
  await t.throwsAsync(cancelled.granted, { name: 'GrantCancelledError' })
  t.is(bucket.waiting, 1)
  await timers.advance(200)
  t.is(lastAt, 100)
})

test('a request larger than the window budget still goes through once nothing is in flight', async t => {
  const timers = new FakeTimers()
  const bucket = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100, now: timers.now, schedule: timers.schedule, ...noOverhead })
  const big = bucket.acquire(5000)
  await timers.advance(0)
  await big.granted
  big.finish()
  let nextAt: number | undefined
  const next = bucket.acquire(100)
  void next.granted.then(() => { nextAt = timers.time })
  await timers.advance(6000)
  t.true(nextAt !== undefined && nextAt >= 1000, `the window holds the 5000 bytes for a second (granted at ${String(nextAt)})`)
})

/** A seeded generator, so that the simulation is the same on every run. */
function random (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0
    return state / 2 ** 32
  }
}

for (const [rate, piece, workers] of [[2 * 1024 * 1024, 64 * 1024, 6], [100_000, 5000, 3], [50_000_000, 64 * 1024, 64]] as const) {
  test(`at ${rate} B/s, ${workers} transfers in pieces of ${piece} B whose answers stall now and then: no one-second window of arrivals over the budget and a piece, average ≥ 90 %`, async t => {
    const timers = new FakeTimers()
    const bucket = new TokenBucket({ bytesPerSecond: rate, now: timers.now, schedule: timers.schedule })
    const draw = random(rate + workers)
    const arrivals: Array<{ at: number, bytes: number }> = []
    const durationMs = 20_000
    const worker = async (): Promise<void> => {
      while (timers.time < durationMs) {
        const grant = bucket.acquire(piece)
        await grant.granted
        // Latency of 1–20 ms, and one answer in twenty held back 300–900 ms (a busy peer), then delivered at once.
        const latency = draw() < 0.05 ? 300 + draw() * 600 : 1 + draw() * 19
        await new Promise<void>(resolve => timers.schedule(latency, resolve))
        grant.arrived(piece)
        arrivals.push({ at: timers.time, bytes: piece })
        grant.finish()
      }
    }
    const running = Promise.all(Array.from({ length: workers }, async () => { await worker() }))
    while (timers.time < durationMs + 2000) await timers.advance(5)
    await running
    let worst = 0
    for (let start = 0; start + 1000 <= durationMs; start += 5) {
      const bytes = arrivals.filter(arrival => arrival.at > start && arrival.at <= start + 1000).reduce((sum, arrival) => sum + arrival.bytes, 0)
      worst = Math.max(worst, bytes)
    }
    const total = arrivals.filter(arrival => arrival.at <= durationMs).reduce((sum, arrival) => sum + arrival.bytes, 0)
    t.true(worst <= bucket.windowBudgetBytes + piece, `worst window ${worst} B against the payload budget ${bucket.windowBudgetBytes.toFixed(0)} B and a piece`)
    t.true(worst <= rate, 'within the cap itself')
    t.true(total / (durationMs / 1000) >= bucket.payloadBytesPerSecond * 0.9, `average ${(total / (durationMs / 1000)).toFixed(0)} B/s`)
  })
}
