import anyTest, { type TestFn } from 'ava'
import { spawn } from 'node:child_process'
import { resolve } from 'node:path'
import { postgresSkipReason } from '../helpers/postgres.js'

const skipReason = postgresSkipReason()
const test = (skipReason === undefined ? anyTest : anyTest.skip) as TestFn
if (skipReason !== undefined) console.log(`the suites' run on PostgreSQL is skipped: ${skipReason}`)

const ROOT = resolve(import.meta.dirname, '../..')
/** The API suites that touch storage, and the end-to-end deployment, once more with every coordinator on PostgreSQL. */
const SUITES = [
  'test/api/api.test.ts', 'test/api/task-model.test.ts', 'test/api/operators.test.ts', 'test/api/status-ingest.test.ts',
  'test/api/phases.test.ts', 'test/api/sites-mesh.test.ts', 'test/api/maintenance-windows.test.ts', 'test/api/package-relations.test.ts',
  'test/api/supersedence.test.ts', 'test/e2e/deploy.test.ts'
]

test('the storage-touching API suites and the end-to-end deployment pass with every coordinator on PostgreSQL', async t => {
  t.timeout(600_000)
  const output: string[] = []
  const code = await new Promise<number | null>((done, reject) => {
    // The key-replacement case is level's own: with PostgreSQL the key lives in the database and comes back.
    const child = spawn(process.execPath, [resolve(ROOT, 'node_modules/ava/entrypoints/cli.mjs'), '--concurrency', '1', '--timeout', '2m', '--match', '!*signed by another key*', ...SUITES], {
      cwd: ROOT, env: { ...process.env, MESHDEPLOY_TEST_STORE: 'postgres' }, stdio: ['ignore', 'pipe', 'pipe']
    })
    const keep = (chunk: Buffer): void => { output.push(chunk.toString()) }
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    child.on('error', reject)
    child.on('exit', done)
  })
  const text = output.join('')
  t.log(text.split('\n').filter(line => /tests? (passed|failed|skipped)/.test(line)).join('\n'))
  t.is(code, 0, text.slice(-6000))
})
