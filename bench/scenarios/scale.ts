import { setMaxListeners } from 'node:events'
import http from 'node:http'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, toHex } from '../../protocol/index.js'
import { adminClient, startMeshdeploy, temporaryFolder, type BenchProcess } from '../processes.js'
import { cpuSeconds, figure, peakRssBytes, type Figure, type ScenarioResult } from '../report.js'
import { scaleChartSpec } from '../charts.js'
import { TestPostgres } from '../../test/helpers/postgres.js'
import { reconnectDelayMs, spreadOfAnswer } from '../../agent/reconnect.js'

export interface ScaleOptions {
  /** Fleet sizes measured one after the other, each against a fresh coordinator. @default [1000, 10000] */
  devices?: number[]
  /** Requests held open at each size (at most the fleet). @default the whole fleet, up to 10,000 */
  held?: number
  /** Sites the devices are spread over. @default one per 250 devices */
  sites?: number
  /** Requests in flight while enrolling and polling. @default 64 */
  concurrency?: number
  /** Store backends measured one after the other in the same run: `level`, `postgres` (a private cluster this run starts). @default ['level'] */
  stores?: Array<'level' | 'postgres'>
  /**
   * After the wake, the coordinator is killed and started again twice under
   * the held devices: they come back as agents did before (backoff and
   * jitter only: the baseline) and as they do now (plus the spread the
   * answers name). @default true
   */
  restart?: boolean
}

interface SimulatedDevice {
  id: string
  credential: string
  etag?: string
  /** The reconnect spread its last answer named, in milliseconds. */
  spreadMs?: number
}

export interface Answer {
  status: number
  body: string
  retryAfter?: string
}

/** One JSON request of a simulated device (or operator) over a shared keep-alive agent: its status and body as text. */
export function request (agent: http.Agent, url: URL, options: { method: string, path: string, credential?: string, body?: unknown, signal?: AbortSignal, localAddress?: string }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = options.body !== undefined ? Buffer.from(JSON.stringify(options.body)) : undefined
    const outgoing = http.request(new URL(options.path, url), {
      method: options.method,
      agent,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
      ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}),
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(body.byteLength) } : {}),
        ...(options.credential !== undefined ? { authorization: `Bearer ${options.credential}` } : {})
      }
    }, response => {
      const parts: Buffer[] = []
      response.on('data', (part: Buffer) => parts.push(part))
      response.on('end', () => {
        const retryAfter = response.headers['retry-after']
        resolve({ status: response.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8'), ...(typeof retryAfter === 'string' ? { retryAfter } : {}) })
      })
      response.on('error', reject)
    })
    outgoing.on('error', reject)
    outgoing.end(body)
  })
}

/** Sends with retries on 503/429 (as agents do: after Retry-After, with jitter); counts the overload answers. */
async function withRetry (send: () => Promise<Answer>, overloads: { count: number }): Promise<Answer> {
  for (let attempt = 0; ; attempt++) {
    const answer = await send()
    if ((answer.status !== 503 && answer.status !== 429) || attempt >= 20) return answer
    overloads.count++
    await new Promise(resolve => setTimeout(resolve, 1000 * Number(answer.retryAfter ?? 1) * (0.5 + Math.random())))
  }
}

async function pool<T> (items: T[], concurrency: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++
      await work(items[index], index)
    }
  }))
}

function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]
}

interface SizeResult {
  devices: number
  held: number
  enrollPerSecond: number
  healthPerSecond: number
  firstPollPerSecond: number
  answerBytesMax: number
  unchangedPollCpuMs: number
  taskCreateMs: number
  wakeMs: { p50: number, p99: number, max: number }
  /** Every held device's wake, sorted. */
  woken: number[]
  everyDeviceMs: number
  coordinatorPeakRssBytes: number
  coordinatorCpuSeconds: number
  overloadAnswers: number
  resetConnections: number
  restarts?: Record<ReconnectPolicy, RestartResult>
}

/** How the held devices come back after the coordinator restarts: `backoff` as agents did before (the baseline), `spread` as they do now. */
type ReconnectPolicy = 'backoff' | 'spread'

interface RestartResult {
  /** What the answers told the devices, in seconds. */
  spreadSeconds: number
  /** From the kill until the new coordinator listened. */
  downMs: number
  /** From the kill until every held device had an answer from the new coordinator. */
  allBackMs: number
  /** Requests sent in all. */
  attempts: number
  /** Requests refused or reset (the coordinator not yet listening, or overrun). */
  failedConnections: number
  /** The failures by error code. */
  failureCodes: Record<string, number>
  /** 503/429 answers. */
  overloadAnswers: number
  /** Most requests sent within one second. */
  peakPerSecond: number
  /** Requests answered per second by the new coordinator, at most, within one second. */
  peakAnsweredPerSecond: number
  /** The new coordinator's CPU from its start until every device was back. */
  coordinatorCpuSeconds: number
  /** Requests sent in each second after the kill. */
  sentPerSecond: number[]
}

/** One fleet size against a fresh coordinator. */
/** Bounds of a restart measurement: it ends by itself. */
const RESTART_ATTEMPTS = 40
const RESTART_TIMEOUT_MS = 240_000

/**
 * The held devices hold their requests open; the coordinator is killed
 * (SIGKILL: every held request fails at once) and started again on the
 * same port and data. Each device comes back as `policy` says and asks for
 * its assignments once; the phase ends when every one has an answer.
 */
async function measureRestart (coordinator: BenchProcess, restart: () => Promise<BenchProcess>, devices: SimulatedDevice[], url: URL, policy: ReconnectPolicy): Promise<{ result: RestartResult, next: BenchProcess }> {
  const holdAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity })
  const stopHolding = new AbortController()
  const deadline = AbortSignal.timeout(RESTART_TIMEOUT_MS)
  // One listener per request in flight, thousands at once.
  setMaxListeners(0, stopHolding.signal, deadline)
  const sent: number[] = []
  const answered: number[] = []
  let failedConnections = 0
  const failures = new Map<string, number>()
  let overloadAnswers = 0
  let killedAt = 0
  let backAt = 0
  let next: BenchProcess | undefined
  try {
    const returns = devices.map(async (device, index) => {
      // Each device from one of 250 loopback addresses, as a fleet comes from many: one generator's
      // ephemeral ports (28,000, each idle for a minute after its connection closed) would run out first.
      const localAddress = `127.0.0.${2 + index % 250}`
      // Connections open 200 at a time, as agents spread over a poll interval would.
      await new Promise(resolve => setTimeout(resolve, Math.floor(index / 200) * 25))
      try {
        const answer = await request(holdAgent, url, { method: 'GET', path: `/v1/agents/assignments?waitSeconds=60&etag=${device.etag!}`, credential: device.credential, signal: stopHolding.signal, localAddress })
        throw new Error(`a held request was answered before the coordinator was killed: HTTP ${answer.status} ${answer.body.slice(0, 200)}`)
      } catch (error) {
        if (killedAt === 0) throw error
      }
      let retryAfterMs: number | undefined
      for (let attempt = 0; attempt < RESTART_ATTEMPTS; attempt++) {
        const delay = reconnectDelayMs({ attempt, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}), spreadMs: policy === 'spread' ? device.spreadMs ?? 0 : 0 })
        await new Promise(resolve => setTimeout(resolve, delay))
        deadline.throwIfAborted()
        sent.push(Date.now() - killedAt)
        let answer: Answer
        try {
          answer = await request(holdAgent, url, { method: 'GET', path: `/v1/agents/assignments?etag=${device.etag!}`, credential: device.credential, signal: deadline, localAddress })
        } catch (error) {
          failedConnections++
          const code = (error as NodeJS.ErrnoException).code ?? (error as Error).name
          failures.set(code, (failures.get(code) ?? 0) + 1)
          retryAfterMs = undefined
          continue
        }
        if (answer.status === 503 || answer.status === 429) {
          overloadAnswers++
          retryAfterMs = 1000 * Number(answer.retryAfter ?? 1)
          continue
        }
        if (answer.status !== 200) throw new Error(`after the restart: HTTP ${answer.status} ${answer.body.slice(0, 200)}`)
        const list = JSON.parse(answer.body) as { etag: string, reconnectSpreadSeconds?: number }
        device.etag = list.etag
        device.spreadMs = spreadOfAnswer(list)
        answered.push(Date.now() - killedAt)
        backAt = Math.max(backAt, Date.now())
        return
      }
      throw new Error(`a device was not back after ${RESTART_ATTEMPTS} attempts`)
    })
    // Handled from now on: a device that fails before the kill fails the phase, not the process.
    const allBack = Promise.all(returns)
    allBack.catch(() => {})
    // Every held request reaches the coordinator and is registered before the kill.
    await new Promise(resolve => setTimeout(resolve, Math.min(15_000, 2000 + devices.length / 2)))
    killedAt = Date.now()
    await coordinator.kill()
    next = await restart()
    const downMs = Date.now() - killedAt
    await allBack
    const seconds = (times: number[]): number[] => {
      const buckets = new Array<number>(Math.floor(Math.max(0, ...times) / 1000) + 1).fill(0)
      for (const at of times) buckets[Math.floor(Math.max(0, at) / 1000)]++
      return buckets
    }
    const perSecond = (times: number[]): number => Math.max(0, ...seconds(times))
    return {
      next,
      result: {
        spreadSeconds: Math.max(0, ...devices.map(device => device.spreadMs ?? 0)) / 1000,
        downMs,
        allBackMs: backAt - killedAt,
        attempts: sent.length,
        failedConnections,
        failureCodes: Object.fromEntries(failures),
        overloadAnswers,
        peakPerSecond: perSecond(sent),
        peakAnsweredPerSecond: perSecond(answered),
        coordinatorCpuSeconds: await cpuSeconds(next.pid),
        sentPerSecond: seconds(sent)
      }
    }
  } catch (error) {
    await next?.kill()
    throw error
  } finally {
    stopHolding.abort()
    holdAgent.destroy()
  }
}

async function measure (size: number, options: Required<Omit<ScaleOptions, 'devices' | 'stores'>>, root: string, store?: string): Promise<SizeResult> {
  const held = Math.min(size, options.held)
  const dataDir = join(root, `coordinator-${size}-${store === undefined ? 'level' : 'postgres'}`)
  let coordinator: BenchProcess | undefined
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.concurrency })
  const holdAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity })
  const overloads = { count: 0 }
  try {
    // The generator is one address standing for a whole fleet: the per-address limit of unauthenticated requests (enrollment) is lifted.
    const args = ['coordinator', 'start', '--data', dataDir, '--port', '0', '--log-level', 'warn', '--anonymous-requests-per-second', '1000000', ...(store !== undefined ? ['--store', store] : [])]
    coordinator = await startMeshdeploy(args, `${dataDir}.log`, 'coordinator-started')
    const url = new URL(coordinator.event.url as string)
    const api = await adminClient(dataDir, url.toString())
    const { token } = await api.post('/v1/enrollment-tokens', { maxUses: size })
    const cpuAtStart = await cpuSeconds(coordinator.pid)

    // Baseline, same coordinator, same run: the cheapest authenticated-free round trip.
    const healthCount = 2000
    let started = process.hrtime.bigint()
    await pool(Array.from({ length: healthCount }), options.concurrency, async () => {
      const answer = await request(agent, url, { method: 'GET', path: '/v1/health' })
      if (answer.status !== 200) throw new Error(`health: HTTP ${answer.status}`)
    })
    const healthPerSecond = healthCount / (Number(process.hrtime.bigint() - started) / 1e9)

    // Each simulated device has its own ed25519 key and credential.
    const keys = Array.from({ length: size }, () => generateKeyPair())
    const devices: SimulatedDevice[] = new Array(size)
    const sites = Math.max(1, options.sites > 0 ? options.sites : Math.ceil(size / 250))
    started = process.hrtime.bigint()
    await pool(keys, options.concurrency, async (key, index) => {
      const answer = await withRetry(async () => await request(agent, url, {
        method: 'POST',
        path: '/v1/agents/enroll',
        body: { token, publicKey: toHex(key.publicKey), hostname: `sim-${index}`, platform: 'linux', arch: 'x64', site: `site-${index % sites}` }
      }), overloads)
      if (answer.status !== 201) throw new Error(`enroll: HTTP ${answer.status} ${answer.body.slice(0, 200)}`)
      const parsed = JSON.parse(answer.body) as { deviceId: string, credential: string }
      devices[index] = { id: parsed.deviceId, credential: parsed.credential }
    })
    const enrollPerSecond = size / (Number(process.hrtime.bigint() - started) / 1e9)

    // Every device reports addresses, so site samples have something to sample.
    await pool(devices, options.concurrency, async (device, index) => {
      const answer = await withRetry(async () => await request(agent, url, {
        method: 'PUT', path: '/v1/agents/self', credential: device.credential, body: { peerAddresses: [`/ip4/127.0.0.1/tcp/${10_000 + (index % 50_000)}`] }
      }), overloads)
      if (answer.status !== 200) throw new Error(`self report: HTTP ${answer.status} ${answer.body.slice(0, 200)}`)
    })

    let answerBytesMax = 0
    started = process.hrtime.bigint()
    await pool(devices, options.concurrency, async device => {
      const answer = await withRetry(async () => await request(agent, url, { method: 'GET', path: '/v1/agents/assignments', credential: device.credential }), overloads)
      if (answer.status !== 200) throw new Error(`first poll: HTTP ${answer.status} ${answer.body.slice(0, 200)}`)
      answerBytesMax = Math.max(answerBytesMax, Buffer.byteLength(answer.body))
      device.etag = (JSON.parse(answer.body) as { etag: string }).etag
    })
    const firstPollPerSecond = size / (Number(process.hrtime.bigint() - started) / 1e9)

    // Polls with a current etag and no wait: what the coordinator spends on one.
    const unchangedPolls = Math.min(size, 5000)
    const cpuBeforeUnchanged = await cpuSeconds(coordinator.pid)
    await pool(devices.slice(0, unchangedPolls), options.concurrency, async device => {
      const answer = await withRetry(async () => await request(agent, url, { method: 'GET', path: `/v1/agents/assignments?etag=${device.etag!}`, credential: device.credential }), overloads)
      if (answer.status !== 200) throw new Error(`unchanged poll: HTTP ${answer.status}`)
    })
    const unchangedPollCpuMs = (await cpuSeconds(coordinator.pid) - cpuBeforeUnchanged) * 1000 / unchangedPolls

    // Held requests, then one install task for all.
    await writeFile(join(root, 'tool.sh'), '#!/bin/sh\nexit 0\n')
    const pkg = await api.uploadPackage(join(root, 'tool.sh'), { name: `scale-${size}`, version: '1' })
    const woken: number[] = []
    let createdAt = 0n
    const resets = { count: 0 }
    const holders: Array<Promise<void>> = []
    for (const [index, device] of devices.slice(0, held).entries()) {
      // Connections open 200 at a time, as agents spread over a poll interval would: no SYN burst beyond the listen backlog.
      if (index > 0 && index % 200 === 0) await new Promise(resolve => setTimeout(resolve, 25))
      holders.push((async () => {
        for (let attempt = 0; attempt < 10; attempt++) {
          let answer: Answer
          try {
            answer = await request(holdAgent, url, { method: 'GET', path: `/v1/agents/assignments?waitSeconds=60&etag=${device.etag!}`, credential: device.credential })
          } catch {
            // A reset connection: counted (the issue's failure mode), then tried again as an agent would.
            resets.count++
            await new Promise(resolve => setTimeout(resolve, 1000 * (0.5 + Math.random())))
            continue
          }
          if (answer.status === 503 || answer.status === 429) {
            overloads.count++
            await new Promise(resolve => setTimeout(resolve, 1000 * Number(answer.retryAfter ?? 1) * (0.5 + Math.random())))
            continue
          }
          if (answer.status !== 200) throw new Error(`held request: HTTP ${answer.status} ${answer.body.slice(0, 200)}`)
          const list = JSON.parse(answer.body) as { assignments: unknown[], etag: string, reconnectSpreadSeconds?: number }
          device.etag = list.etag
          device.spreadMs = spreadOfAnswer(list)
          if (list.assignments.length > 0 && createdAt > 0n) {
            woken.push(Number(process.hrtime.bigint() - createdAt) / 1e6)
            return
          }
        }
      })())
    }
    // Give every held request time to reach the coordinator and be registered.
    await new Promise(resolve => setTimeout(resolve, Math.min(15_000, 2000 + held / 2)))
    createdAt = process.hrtime.bigint()
    await api.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { all: true } })
    const taskCreateMs = Number(process.hrtime.bigint() - createdAt) / 1e6
    await Promise.all(holders)
    // The others poll on their interval: each once, spread as agents spread their polls.
    await pool(devices.slice(held), options.concurrency, async device => {
      const answer = await withRetry(async () => await request(agent, url, { method: 'GET', path: `/v1/agents/assignments?etag=${device.etag!}`, credential: device.credential }), overloads)
      if (answer.status !== 200 || (JSON.parse(answer.body) as { assignments: unknown[] }).assignments.length === 0) throw new Error(`a polling device did not get the task: HTTP ${answer.status}`)
    })
    const everyDeviceMs = Number(process.hrtime.bigint() - createdAt) / 1e6
    if (woken.length !== held) throw new Error(`${woken.length} of ${held} held devices got the task`)
    woken.sort((a, b) => a - b)
    api.close()
    const coordinatorPeakRssBytes = await peakRssBytes(coordinator.pid)
    const coordinatorCpuSeconds = await cpuSeconds(coordinator.pid) - cpuAtStart
    let restarts: Record<ReconnectPolicy, RestartResult> | undefined
    if (options.restart) {
      const heldDevices = devices.slice(0, held)
      const restartedArgs = [...args.slice(0, args.indexOf('--port') + 1), url.port, ...args.slice(args.indexOf('--port') + 2)]
      const restartOnce = async (policy: ReconnectPolicy): Promise<RestartResult> => {
        const { result, next } = await measureRestart(coordinator!, async () => await startMeshdeploy(restartedArgs, `${dataDir}.${policy}.log`, 'coordinator-started'), heldDevices, url, policy)
        coordinator = next
        return result
      }
      restarts = { backoff: await restartOnce('backoff'), spread: await restartOnce('spread') }
    }
    return {
      devices: size,
      held,
      enrollPerSecond,
      healthPerSecond,
      firstPollPerSecond,
      answerBytesMax,
      unchangedPollCpuMs,
      taskCreateMs,
      wakeMs: { p50: percentile(woken, 0.5), p99: percentile(woken, 0.99), max: woken[woken.length - 1] },
      woken,
      everyDeviceMs,
      coordinatorPeakRssBytes,
      coordinatorCpuSeconds,
      overloadAnswers: overloads.count,
      resetConnections: resets.count,
      ...(restarts !== undefined ? { restarts } : {})
    }
  } finally {
    agent.destroy()
    holdAgent.destroy()
    await coordinator?.stop()
  }
}

/**
 * One coordinator and a fleet of simulated devices over HTTP: each with its
 * own ed25519 key and credential, enrolled, reporting addresses, polling,
 * then holding assignments requests open while one install task for all is
 * created. Run at several fleet sizes in the same run: the figures of the
 * larger fleet are given as ratios to the smaller (an answer that does not
 * grow with the fleet stays at 1×), and rates beside the coordinator's
 * plain health round trip measured in the same run.
 */
export async function scaleScenario (options: ScaleOptions = {}): Promise<ScenarioResult> {
  const sizes = options.devices ?? [1000, 10_000]
  const resolved = { held: options.held ?? 10_000, sites: options.sites ?? 0, concurrency: options.concurrency ?? 64, restart: options.restart ?? true }
  const stores = options.stores ?? ['level']
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const root = await temporaryFolder('scale')
  try {
    const figures: Figure[] = []
    const byStore = new Map<string, SizeResult[]>()
    for (const backend of stores) {
      const cluster = backend === 'postgres' ? await TestPostgres.start() : undefined
      try {
        const results: SizeResult[] = []
        for (const size of sizes) results.push(await measure(size, resolved, root.path, cluster !== undefined ? await cluster.createDatabase('scale') : undefined))
        byStore.set(backend, results)
      } finally {
        await cluster?.stop()
      }
    }
    for (const [backend, results] of byStore) {
    const first = results[0]
    const on = stores.length > 1 ? `[${backend}] ` : ''
    for (const result of results) {
      const n = on + result.devices.toLocaleString('en')
      figures.push(
        figure(`${n} devices: enrollments per second`, result.enrollPerSecond, '/s', { atLeast: 1000 }, `${(result.enrollPerSecond / result.healthPerSecond).toFixed(3)} × the health round trip (${result.healthPerSecond.toFixed(0)}/s, same run)`),
        figure(`${n} devices: first polls per second`, result.firstPollPerSecond, '/s', undefined, `${(result.firstPollPerSecond / result.healthPerSecond).toFixed(3)} × the health round trip`),
        figure(`${n} devices: largest assignments answer`, result.answerBytesMax / 1024, 'KiB', { atMost: 16 }, 'one task, a site sample of 32 peers'),
        figure(`${n} devices: coordinator CPU per poll with a current etag`, result.unchangedPollCpuMs, 'ms', { atMost: 1 }),
        figure(`${n} devices: task create (all devices)`, result.taskCreateMs, 'ms'),
        figure(`${n} devices, ${result.held.toLocaleString('en')} held: task → held device p50`, result.wakeMs.p50, 'ms', { atMost: 250 }),
        figure(`${n} devices, ${result.held.toLocaleString('en')} held: task → held device p99`, result.wakeMs.p99, 'ms', { atMost: 1000 }),
        figure(`${n} devices: task → held device max`, result.wakeMs.max, 'ms'),
        figure(`${n} devices: task → every device (held, then each of the others polling once)`, result.everyDeviceMs, 'ms'),
        figure(`${n} devices: coordinator peak RSS`, result.coordinatorPeakRssBytes / 2 ** 20, 'MiB'),
        figure(`${n} devices: coordinator CPU, whole run`, result.coordinatorCpuSeconds, 'CPU-s'),
        figure(`${n} devices: overload answers (503/429, retried)`, result.overloadAnswers, ''),
        figure(`${n} devices: held requests whose connection was reset (retried)`, result.resetConnections, '', { atMost: 0 })
      )
      if (result.restarts !== undefined) {
        const { backoff, spread } = result.restarts
        const h = result.held.toLocaleString('en')
        const side = (name: string, pick: (restart: RestartResult) => number, unit: string, note?: string): Figure[] => [
          figure(`${n} devices, restart under ${h} held, backoff only (baseline): ${name}`, pick(backoff), unit),
          figure(`${n} devices, restart under ${h} held, with the spread: ${name}`, pick(spread), unit, undefined, note)
        ]
        figures.push(
          ...side('busiest second of reconnects', restart => restart.peakPerSecond, '/s', `spread told by the answers: ${spread.spreadSeconds} s`),
          ...side('refused or reset reconnects', restart => restart.failedConnections, ''),
          ...side('overload answers (503/429)', restart => restart.overloadAnswers, ''),
          ...side('kill → every held device answered again', restart => restart.allBackMs, 'ms', `the coordinator listened again ${spread.downMs} ms after the kill (baseline run: ${backoff.downMs} ms)`),
          ...side('coordinator CPU from its start until all back', restart => restart.coordinatorCpuSeconds, 'CPU-s'),
          figure(`${n} devices, restart: busiest second, spread ÷ baseline`, spread.peakPerSecond / backoff.peakPerSecond, '×', undefined, 'same run, same fleet, same coordinator data'),
          figure(`${n} devices, restart: failed reconnects and overload answers, spread ÷ baseline`, (spread.failedConnections + spread.overloadAnswers) / Math.max(1, backoff.failedConnections + backoff.overloadAnswers), '×'),
          figure(`${n} devices, restart: every device back, spread ÷ baseline`, spread.allBackMs / backoff.allBackMs, '×', undefined, `spread ${(spread.allBackMs / 1000).toFixed(1)} s against a poll interval of 30 s`)
        )
      }
      if (result !== first) {
        const ratio = result.devices / first.devices
        figures.push(
          figure(`${on}answer size at ${result.devices.toLocaleString('en')} ÷ at ${first.devices.toLocaleString('en')} devices`, result.answerBytesMax / first.answerBytesMax, '×', { atMost: 1.1 }, `fleet ${ratio}× larger`),
          figure(`${on}wake p99 at ${result.devices.toLocaleString('en')} ÷ at ${first.devices.toLocaleString('en')} devices`, result.wakeMs.p99 / first.wakeMs.p99, '×', undefined, `${(result.held / first.held).toFixed(1)}× the held requests`),
          figure(`${on}enrollments per second at ${result.devices.toLocaleString('en')} ÷ at ${first.devices.toLocaleString('en')} devices`, result.enrollPerSecond / first.enrollPerSecond, '×', { atLeast: 0.8 })
        )
      }
    }
    }
    // The same run's level figures are the baseline of PostgreSQL's.
    const level = byStore.get('level')
    const postgres = byStore.get('postgres')
    if (level !== undefined && postgres !== undefined) {
      for (const [at, result] of postgres.entries()) {
        const base = level[at]
        const n = result.devices.toLocaleString('en')
        figures.push(
          figure(`postgres ÷ level, ${n} devices: enrollments per second`, result.enrollPerSecond / base.enrollPerSecond, '×'),
          figure(`postgres ÷ level, ${n} devices: task → held device p99`, result.wakeMs.p99 / base.wakeMs.p99, '×'),
          figure(`postgres ÷ level, ${n} devices: coordinator CPU, whole run`, result.coordinatorCpuSeconds / base.coordinatorCpuSeconds, '×', undefined, 'PostgreSQL\'s own CPU not included')
        )
      }
    }
    const fleetName = (backend: string, devices: number): string => `${stores.length > 1 ? `${backend} ` : ''}${devices.toLocaleString('en')} devices`
    const all = [...byStore].flatMap(([backend, results]) => results.map(result => ({ backend, result })))
    return {
      scenario: 'scale',
      startedAt,
      durationMs: Date.now() - started,
      parameters: { devices: sizes, stores, ...resolved },
      figures,
      chart: scaleChartSpec({
        title: `scale: held devices woken by a task for all, and their return after a restart (${sizes.map(size => size.toLocaleString('en')).join(' and ')} devices)`,
        wakeMs: all.map(({ backend, result }) => ({ fleet: fleetName(backend, result.devices), ms: result.woken })),
        reconnects: all.flatMap(({ backend, result }) => result.restarts === undefined
          ? []
          : [
              { fleet: fleetName(backend, result.devices), policy: 'backoff only', perSecond: result.restarts.backoff.sentPerSecond },
              { fleet: fleetName(backend, result.devices), policy: 'with the spread', perSecond: result.restarts.spread.sentPerSecond }
            ])
      }),
      raw: { results: Object.fromEntries(byStore) }
    }
  } finally {
    await root.removeNow()
  }
}
