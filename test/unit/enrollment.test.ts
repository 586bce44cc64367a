import test from 'ava'
import { enrollWithRetry } from '../../agent/enrollment.js'
import { CoordinatorError, CoordinatorUnreachableError } from '../../agent/errors.js'
import { FakeClock } from '../helpers/coordinator.js'

const silent = { warn: () => {} }

/** A sleep that only moves the fake clock, recording each wait. */
const fakeSleep = (clock: FakeClock, waits: number[]) => async (ms: number): Promise<void> => { waits.push(ms); clock.advance(ms) }

test('an unreachable coordinator is tried again after 1 s, 2 s, 4 s …, up to 30 s between tries', async t => {
  const clock = new FakeClock()
  const waits: number[] = []
  let tries = 0
  const result = await enrollWithRetry(async () => {
    if (++tries < 8) throw new CoordinatorUnreachableError('down')
    return 'enrolled'
  }, { logger: silent, now: clock.now, sleep: fakeSleep(clock, waits) })
  t.is(result, 'enrolled')
  t.deepEqual(waits, [1000, 2000, 4000, 8000, 16000, 30000, 30000])
})

test('the tries stop once the next wait would pass the give-up time, with the last error', async t => {
  const clock = new FakeClock()
  const waits: number[] = []
  const error = await t.throwsAsync(enrollWithRetry(async () => { throw new CoordinatorUnreachableError('down') }, { logger: silent, now: clock.now, sleep: fakeSleep(clock, waits), giveUpAfterMs: 10_000 }))
  t.is(error?.name, 'CoordinatorUnreachableError')
  t.deepEqual(waits, [1000, 2000, 4000], 'a fourth wait of 8 s would end after 15 s')
})

test('a refusal is not tried again', async t => {
  const clock = new FakeClock()
  const waits: number[] = []
  let tries = 0
  const error = await t.throwsAsync(enrollWithRetry(async () => { tries++; throw new CoordinatorError(403, 'token-expired', 'the token expired') }, { logger: silent, now: clock.now, sleep: fakeSleep(clock, waits) }))
  t.is(error?.name, 'CoordinatorError')
  t.is(tries, 1)
  t.deepEqual(waits, [])
})

test('an aborted enrollment stops trying', async t => {
  const clock = new FakeClock()
  const controller = new AbortController()
  let tries = 0
  await t.throwsAsync(enrollWithRetry(async () => { tries++; throw new CoordinatorUnreachableError('down') }, {
    logger: silent,
    now: clock.now,
    signal: controller.signal,
    sleep: async ms => { clock.advance(ms); controller.abort(new Error('stopping')) }
  }), { message: 'stopping' })
  t.is(tries, 1)
})
