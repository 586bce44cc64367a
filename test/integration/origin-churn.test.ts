/**
 * A site of three real agents (child processes on loopback, mDNS off) whose
 * every request to the coordinator crosses a counting proxy, one port per
 * agent. One agent's origin answer is held mid-chunk and that agent is killed
 * (SIGKILL, a crash); another's answer is cut mid-chunk (a dropped
 * connection). The site still fetches each chunk's bytes from the origin once:
 * the cut chunk is resumed from its first missing byte, the chunks elected to
 * the killed agent are handed back when its connections close and fetched by
 * the others, and nothing the site already holds is fetched again after the
 * killed agent restarts. The only bytes fetched twice are the part of the
 * held chunk that died with the killed agent.
 */
import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startAgentProcess, startCoordinatorProcess, waitFor, type AgentProcess } from '../helpers/processes.js'
import { OriginProxy } from '../helpers/origin-proxy.js'

const AGENTS = 3
const CHUNK_BYTES = 256 * 1024
const PACKAGE_BYTES = 16 * CHUNK_BYTES
const HELD_AFTER_BYTES = 96 * 1024
const CUT_AFTER_BYTES = 160 * 1024

function metric (text: string, line: string): number {
  const found = text.split('\n').find(candidate => candidate.startsWith(line + ' '))
  return found === undefined ? 0 : Number(found.split(' ').pop())
}

test('an elected agent killed mid-chunk and an answer cut mid-chunk: the site fetches each chunk from the origin once', async t => {
  const coordinator = await startCoordinatorProcess({ chunkSizeKiB: CHUNK_BYTES / 1024 })
  const proxy = new OriginProxy(new URL(coordinator.url))
  const work = await mkdtemp(join(tmpdir(), 'md-origin-churn-'))
  const agents: AgentProcess[] = []
  const urls: string[] = []
  try {
    const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: AGENTS })
    for (let index = 0; index < AGENTS; index++) urls.push(await proxy.listen(`agent-${index}`))
    const start = async (index: number, dataDir?: string): Promise<AgentProcess> => await startAgentProcess({
      coordinatorUrl: urls[index],
      enrollToken: token,
      hostname: `churn-${index}`,
      site: 'branch',
      ...(dataDir !== undefined ? { dataDir } : {}),
      extraArgs: ['--metrics-listen', '127.0.0.1:0']
    })
    agents.push(...await Promise.all(Array.from({ length: AGENTS }, async (_, index) => await start(index))))
    // Every agent sees both others before the task: they elect among the same three.
    await waitFor(async () => {
      const counts = await Promise.all(agents.map(async agent => metric(await (await fetch(agent.event.metricsUrl as string)).text(), 'meshdeploy_agent_peers_connected')))
      return counts.every(count => count >= AGENTS - 1) ? true : undefined
    }, 'every agent to connect to the other two', 60_000, 200)

    const held = proxy.interruptNext('agent-0', 'stall', HELD_AFTER_BYTES)
    const cut = proxy.interruptNext('agent-1', 'cut', CUT_AFTER_BYTES)
    const file = join(work, 'data.bin')
    const content = randomBytes(PACKAGE_BYTES)
    await writeFile(file, content)
    const chunks = Array.from({ length: PACKAGE_BYTES / CHUNK_BYTES }, (_, index) => createHash('sha256').update(content.subarray(index * CHUNK_BYTES, (index + 1) * CHUNK_BYTES)).digest('hex'))
    const pkg = await coordinator.api.uploadPackage(file, { name: 'data', version: '1' })
    const task = await coordinator.api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/srv', targets: { sites: ['branch'] } })

    // The crash: the agent dies with part of an origin chunk received.
    const stalled = await held
    await agents[0].kill()
    const cutShort = await cut

    const rows = async (): Promise<any[]> => (await coordinator.api.get(`/v1/tasks/${task.id}/devices`)).devices
    await waitFor(async () => {
      const survivors = (await rows()).filter((row: any) => row.hostname !== 'churn-0')
      return survivors.length === AGENTS - 1 && survivors.every((row: any) => row.state === 'succeeded') ? true : undefined
    }, 'the two other devices to succeed', 120_000, 200)
    const beforeRestart = proxy.answers.length
    // The killed agent comes back on its data folder and finishes from the site.
    agents[0] = await start(0, agents[0].dataDir)
    await waitFor(async () => {
      const all = await rows()
      return all.length === AGENTS && all.every((row: any) => row.state === 'succeeded') ? true : undefined
    }, 'every device to succeed', 120_000, 200)

    const sent = proxy.bytesByChunk()
    t.log(proxy.answers.map(answer => `${answer.agent} chunk ${chunks.indexOf(answer.sha256)} [${answer.start},${answer.end}) ${answer.sentBytes}${answer.complete ? '' : ' cut'}`).join('\n'))
    t.log(`held: chunk ${chunks.indexOf(stalled.sha256)}, cut: chunk ${chunks.indexOf(cutShort.sha256)}`)
    const diedWithAgent = proxy.answers.find(answer => answer.agent === 'agent-0' && answer.sha256 === stalled.sha256 && !answer.complete)
    for (const [index, sha256] of chunks.entries()) {
      t.is(sent.get(sha256), CHUNK_BYTES + (sha256 === stalled.sha256 ? stalled.sentBytes : 0), `chunk ${index}: bytes from the origin`)
      // Apart from the part that died with the killed agent, what crossed covers the chunk once.
      const once = proxy.answers.filter(answer => answer.sha256 === sha256 && answer !== diedWithAgent)
      t.is(once.reduce((sum, answer) => sum + answer.sentBytes, 0), CHUNK_BYTES, `chunk ${index}: fetched once`)
    }
    // The cut answer was resumed by the same agent from its first missing byte.
    const resumed = proxy.answers.find(answer => answer.agent === 'agent-1' && answer.sha256 === cutShort.sha256 && answer.start === cutShort.sentBytes)
    t.truthy(resumed, 'a range request from the first missing byte')
    t.is(resumed?.complete, true)
    // The held chunk went to a live agent.
    t.true(proxy.answers.some(answer => answer.sha256 === stalled.sha256 && answer.agent !== 'agent-0' && answer.complete))
    // After its restart the agent fetched nothing from the origin: the site held it all.
    t.is(proxy.answers.slice(beforeRestart).length, 0)
    const total = [...sent.values()].reduce((sum, bytes) => sum + bytes, 0)
    t.log(`origin ${(total / PACKAGE_BYTES).toFixed(3)} copies (${stalled.sentBytes} bytes died with the killed agent), ${proxy.answers.length} answers`)
  } finally {
    await Promise.all(agents.map(async agent => { await agent.stop() }))
    await proxy.close()
    await coordinator.stop()
    await rm(work, { recursive: true, force: true })
  }
})
