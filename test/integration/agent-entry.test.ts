import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { BIN, startAgentProcess, startCoordinatorProcess, type CoordinatorProcess } from '../helpers/processes.js'

const run = promisify(execFile)
const REGISTER = resolve(import.meta.dirname, '../fixtures/module-log/register.mjs')

/** What a device must never load: the operator CLI, the coordinator and its server-side libraries. */
const OPERATOR_SIDE = [/\/dist\/coordinator\//, /node_modules\/koa\//, /node_modules\/@koa\//, /node_modules\/prom-client\//, /node_modules\/busboy\//, /node_modules\/cli-progress\//, /node_modules\/ssh2\//]
/** What an agent loads only when it shares chunks with peers. */
const MESH_SIDE = [/node_modules\/libp2p\//, /node_modules\/@libp2p\//, /node_modules\/@chainsafe\//, /\/dist\/agent\/p2p\//]

const matching = (modules: string[], patterns: RegExp[]): string[] => modules.filter(url => patterns.some(pattern => pattern.test(url)))

let coordinator: CoordinatorProcess
let work: string
let token: string

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'md-agent-entry-'))
  coordinator = await startCoordinatorProcess()
  token = (await coordinator.api.post('/v1/enrollment-tokens', { maxUses: 10 })).token
})

test.after.always(async () => {
  coordinator?.api.close()
  await coordinator?.stop()
  await rm(work, { recursive: true, force: true })
})

async function modulesOfAgent (hostname: string, extraArgs: string[]): Promise<string[]> {
  const log = join(work, `${hostname}.modules`)
  const agent = await startAgentProcess({
    coordinatorUrl: coordinator.url,
    enrollToken: token,
    hostname,
    site: 'entry',
    extraArgs,
    command: [process.execPath, '--import', REGISTER, BIN],
    env: { ...process.env, MESHDEPLOY_MODULE_LOG: log }
  })
  try {
    return (await readFile(log, 'utf8')).split('\n').filter(line => line !== '')
  } finally {
    await agent.stop()
    await rm(agent.dataDir, { recursive: true, force: true })
  }
}

test('an agent with peer sharing off loads neither the operator side nor libp2p', async t => {
  const modules = await modulesOfAgent('lean', ['--p2p', 'off'])
  t.true(modules.some(url => url.includes('/dist/agent/agent.js')), 'the log holds the agent\'s own modules')
  t.deepEqual(matching(modules, OPERATOR_SIDE), [])
  t.deepEqual(matching(modules, MESH_SIDE), [])
})

test('an agent with the mesh on loads libp2p but not the operator side', async t => {
  const modules = await modulesOfAgent('meshed', [])
  t.true(matching(modules, MESH_SIDE).length > 0)
  t.deepEqual(matching(modules, OPERATOR_SIDE), [])
})

test('the operator commands still load the operator CLI and list the agent\'s', async t => {
  const { stdout } = await run(process.execPath, [BIN, '--help'])
  t.regex(stdout, /\bagent\b/)
  t.regex(stdout, /\bcoordinator\b/)
  const { stdout: agentHelp } = await run(process.execPath, [BIN, 'agent', 'start', '--help'])
  t.regex(agentHelp, /--p2p <on\|off>/)
})
