import test from 'ava'
import { fetchPacedRanges } from '../../agent/download/paced-ranges.js'
import { TokenBucket } from '../../agent/download/token-bucket.js'

const ranges = async (init: Parameters<typeof fetchPacedRanges>[0]): Promise<Array<[number, number]>> => {
  const asked: Array<[number, number]> = []
  await fetchPacedRanges(init, async (start, end) => { asked.push([start, end]) })
  return asked
}

test('uncapped: one range of the whole length, or ranges of the largest size allowed', async t => {
  const signal = new AbortController().signal
  t.deepEqual(await ranges({ lengthBytes: 1000, signal }), [[0, 1000]])
  t.deepEqual(await ranges({ lengthBytes: 1000, maxRangeBytes: 400, signal }), [[0, 400], [400, 800], [800, 1000]])
  t.deepEqual(await ranges({ lengthBytes: 300, maxRangeBytes: 400, signal }), [[0, 300]])
})

test('capped: ranges no larger than the bucket\'s burst, each asked once granted', async t => {
  const signal = new AbortController().signal
  // A clock that moves only by the waits the bucket asks for.
  let time = 0
  const bucket = new TokenBucket({ bytesPerSecond: 1e9, burstBytes: 256, wireOverhead: 0, now: () => time, schedule: (ms, run) => { const timer = setTimeout(() => { time += ms; run() }, 0); return () => { clearTimeout(timer) } } })
  t.deepEqual(await ranges({ lengthBytes: 600, maxRangeBytes: 400, bucket, signal }), [[0, 256], [256, 512], [512, 600]])
})

test('arrivals are reported to the bucket as they come; nothing is in flight once the ranges are done', async t => {
  const signal = new AbortController().signal
  const bucket = new TokenBucket({ bytesPerSecond: 1e9, burstBytes: 100, wireOverhead: 0 })
  const inFlight: number[] = []
  await fetchPacedRanges({ lengthBytes: 250, bucket, signal }, async (start, end, onBytes) => {
    inFlight.push(bucket.inFlightBytes)
    onBytes?.(end - start)
  })
  t.true(inFlight[0] >= 100, 'a granted range is in flight until its bytes arrive')
  t.is(bucket.inFlightBytes, 0)
  t.is(bucket.arrivedInWindowBytes, 250)
})

test('a range that fails counts as arrived, and the next range\'s grant goes back unused', async t => {
  const signal = new AbortController().signal
  const bucket = new TokenBucket({ bytesPerSecond: 1e6, burstBytes: 100, wireOverhead: 0 })
  const asked: number[] = []
  const error = await t.throwsAsync(fetchPacedRanges({ lengthBytes: 300, bucket, signal }, async (start, _end, onBytes) => {
    asked.push(start)
    onBytes?.(40)
    throw new Error('refused')
  }))
  t.is(error?.message, 'refused')
  t.deepEqual(asked, [0], 'nothing more is asked after a failure')
  t.is(bucket.inFlightBytes, 0, 'neither the failed range nor the next one is left in flight')
  t.is(bucket.arrivedInWindowBytes, 100, 'the failed range counts in full: its 60 unseen bytes may have crossed the wire')
  t.is(bucket.waiting, 0)
})

test('an aborted download stops waiting for the bucket', async t => {
  const controller = new AbortController()
  const bucket = new TokenBucket({ bytesPerSecond: 1, burstBytes: 1, now: () => 0 })
  const running = fetchPacedRanges({ lengthBytes: 10, bucket, signal: controller.signal }, async () => {})
  controller.abort(new Error('stopped'))
  await t.throwsAsync(running, { message: 'stopped' })
})
