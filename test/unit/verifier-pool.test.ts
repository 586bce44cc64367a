import test from 'ava'
import { exceedsDepth } from '../../coordinator/http/body.js'
import { generateKeyPair, sign, VerifierPool } from '../../protocol/index.js'

test('the pool tells good signatures from bad ones, batched across its threads, and in the order asked', async t => {
  const pool = new VerifierPool({ threads: 2, maxBatch: 16 })
  try {
    const key = generateKeyPair()
    const other = generateKeyPair()
    const messages = Array.from({ length: 200 }, (_, index) => new TextEncoder().encode(`record ${index}`))
    const signatures = messages.map((message, index) => sign(message, index % 3 === 0 ? other.secretKey : key.secretKey))
    const verdicts = await Promise.all(messages.map(async (message, index) => await pool.check(signatures[index], message, key.publicKey)))
    t.deepEqual(verdicts, messages.map((_, index) => index % 3 !== 0))
    t.is(pool.size, 2, 'both threads took batches')
    const altered = new Uint8Array(messages[1])
    altered[0] ^= 1
    t.false(await pool.check(signatures[1], altered, key.publicKey), 'an altered message does not verify')
    t.false(await pool.check(signatures[1].subarray(0, 63), messages[1], key.publicKey), 'a short signature is refused without a thread')
    t.false(await pool.check(signatures[1], messages[1], key.publicKey.subarray(0, 31)), 'a short key is refused without a thread')
  } finally {
    await pool.close()
  }
})

test('a closed pool refuses to check rather than answer', async t => {
  const pool = new VerifierPool({ threads: 1 })
  const key = generateKeyPair()
  const message = new TextEncoder().encode('record')
  t.true(await pool.check(sign(message, key.secretKey), message, key.publicKey))
  await pool.close()
  await t.throwsAsync(pool.check(sign(message, key.secretKey), message, key.publicKey), { message: /closed/ })
})

test('JSON depth: brackets in strings, escaped quotes and backslashes do not count', t => {
  const cases: Array<[string, number, boolean]> = [
    ['[[[]]]', 3, false],
    ['[[[[]]]]', 3, true],
    ['{"a":{"b":{"c":1}}}', 3, false],
    ['{"a":{"b":{"c":{}}}}', 3, true],
    ['["[[[[[[", "{{{{"]', 1, false],
    ['["a\\"[[[[", "x"]', 1, false],
    ['["a\\\\", [[[]]]]', 3, true],
    ['["a\\\\\\"[[[", 1]', 1, false],
    ['"unterminated [[[[', 1, false]
  ]
  for (const [text, maxDepth, deeper] of cases) t.is(exceedsDepth(text, maxDepth), deeper, text)
})
