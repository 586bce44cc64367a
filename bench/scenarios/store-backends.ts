import http from 'node:http'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createApp } from '../../coordinator/http/app.js'
import { openServices, type Services } from '../../coordinator/services.js'
import { silentLogger } from '../../protocol/logger.js'
import { generateKeyPair, signStatusRecord, toHex, type Ed25519KeyPair, type StatusRecord } from '../../protocol/index.js'
import { TestPostgres } from '../../test/helpers/postgres.js'
import { figure, type Figure, type ScenarioResult } from '../report.js'

export interface StoreBackendsOptions {
  /** Devices enrolled, held and reporting per backend. @default 400 */
  devices?: number
  /** Status records each device reports. @default 10 */
  recordsPerDevice?: number
  /** Requests in flight at once while enrolling and reporting. @default 16 */
  concurrency?: number
}

interface Coordinator {
  services: Services
  url: string
  close: () => Promise<void>
}

interface Device {
  id: string
  credential: string
  key: Ed25519KeyPair
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY })

async function request (url: string, method: string, path: string, token: string | undefined, body?: unknown): Promise<{ status: number, body: any }> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
  return await new Promise((resolve, reject) => {
    const req = http.request(new URL(path, url), {
      method, agent,
      headers: { ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}), ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': payload.byteLength } : {}) }
    }, res => {
      const chunks: Buffer[] = []
      res.on('data', chunk => chunks.push(chunk))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        resolve({ status: res.statusCode ?? 0, body: text === '' ? undefined : JSON.parse(text) })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(payload)
  })
}

async function expectOk (response: Promise<{ status: number, body: any }>, what: string): Promise<any> {
  const { status, body } = await response
  if (status < 200 || status >= 300) throw new Error(`${what}: ${status} ${JSON.stringify(body)}`)
  return body
}

async function start (dataDir: string, store: string | undefined, contentDir: string): Promise<Coordinator> {
  const services = await openServices({ dataDir, ...(store !== undefined ? { store } : {}), contentDir, logger: silentLogger(), chunkSizeBytes: 64 * 1024 })
  const app = createApp(services, { limits: { anonymousRate: { requestsPerSecond: 1_000_000, burst: 1_000_000 }, deviceRate: { requestsPerSecond: 1_000_000, burst: 1_000_000 }, operatorRate: { requestsPerSecond: 1_000_000, burst: 1_000_000 } } })
  const server = http.createServer(app.callback())
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  return {
    services,
    url,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
      await services.close()
    }
  }
}

async function inParallel<T> (items: T[], concurrency: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) {
      const index = next++
      await work(items[index], index)
    }
  }))
}

/** CPU seconds of a PostgreSQL cluster: the postmaster and its live backends. */
async function clusterCpuSeconds (folder: string | undefined): Promise<number> {
  if (folder === undefined) return 0
  const postmaster = Number((await readFile(join(folder, 'data', 'postmaster.pid'), 'utf8')).split('\n')[0])
  let total = 0
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '')
    if (stat === '') continue
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (Number(name) !== postmaster && Number(fields[1]) !== postmaster) continue
    total += (Number(fields[11]) + Number(fields[12])) / 100
  }
  return total
}

function percentile (values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]
}

interface Measured {
  enrollPerSecond: number
  wakeP50Ms: number
  wakeP99Ms: number
  statusPerSecond: number
  coordinatorCpuSeconds: number
  databaseCpuSeconds: number
  wallSeconds: number
}

/**
 * One backend's run: devices enroll (through `a` and `b` in turn), hold
 * their assignments requests on `b`, a task for all of them is created on
 * `a` (the wake), then every device reports its records (through `a` and
 * `b` in turn).
 */
async function measure (a: Coordinator, b: Coordinator, options: Required<StoreBackendsOptions>, cluster: string | undefined): Promise<Measured> {
  const cpuStart = process.cpuUsage()
  const dbStart = await clusterCpuSeconds(cluster)
  const wallStart = performance.now()
  const admin = a.services.bootstrapAdminToken!
  const { token } = await expectOk(request(a.url, 'POST', '/v1/enrollment-tokens', admin, { maxUses: options.devices }), 'enrollment token')
  const devices: Device[] = []
  const enrollStart = performance.now()
  await inParallel(Array.from({ length: options.devices }, (_, n) => n), options.concurrency, async n => {
    const key = generateKeyPair()
    const via = n % 2 === 0 ? a : b
    const body = await expectOk(request(via.url, 'POST', '/v1/agents/enroll', undefined, { token, publicKey: toHex(key.publicKey), hostname: `bench-${n}`, platform: 'linux', arch: 'x64', site: `site-${n % 20}` }), 'enroll')
    devices[n] = { id: body.deviceId, credential: body.credential, key }
  })
  const enrollPerSecond = options.devices / ((performance.now() - enrollStart) / 1000)
  const pkg = await expectOk(new Promise((resolve, reject) => {
    const boundary = 'benchboundary'
    const file = Buffer.from('#!/bin/sh\necho ok\n')
    const payload = Buffer.concat([
      Buffer.from(`--${boundary}\r\ncontent-disposition: form-data; name="metadata"\r\n\r\n${JSON.stringify({ name: 'bench', version: String(Date.now()) })}\r\n--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="tool.sh"\r\ncontent-type: application/octet-stream\r\n\r\n`),
      file, Buffer.from(`\r\n--${boundary}--\r\n`)
    ])
    const req = http.request(new URL('/v1/packages', a.url), { method: 'POST', agent, headers: { authorization: `Bearer ${admin}`, 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': payload.byteLength } }, res => {
      const chunks: Buffer[] = []
      res.on('data', chunk => chunks.push(chunk))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }) })
    })
    req.on('error', reject)
    req.end(payload)
  }), 'upload')
  // Every device holds a request on B with its current etag.
  const etags = new Array<string>(devices.length)
  await inParallel(devices, options.concurrency, async (device, n) => {
    etags[n] = (await expectOk(request(b.url, 'GET', '/v1/agents/assignments', device.credential), 'assignments')).etag
  })
  let createdAt = 0
  const woken = devices.map(async (device, n) => {
    const answer = await expectOk(request(b.url, 'GET', `/v1/agents/assignments?waitSeconds=60&etag=${etags[n]}`, device.credential), 'held assignments')
    if (answer.assignments.length === 0) throw new Error('a held request answered without the task')
    return performance.now() - createdAt
  })
  // Let every request reach its wait.
  await new Promise(resolve => setTimeout(resolve, 1000))
  createdAt = performance.now()
  const task = await expectOk(request(a.url, 'POST', '/v1/tasks', admin, { packageId: pkg.id, action: 'install', targets: { all: true } }), 'task')
  const wakeMs = await Promise.all(woken)
  const statusStart = performance.now()
  await inParallel(devices, options.concurrency, async (device, n) => {
    const records = Array.from({ length: options.recordsPerDevice }, (_, at) => {
      const seq = at + 1
      const record: StatusRecord = {
        type: 'meshdeploy.status', deviceId: device.id, taskId: task.id, revision: 1, attempt: 1, seq,
        state: seq === options.recordsPerDevice ? 'succeeded' : 'downloading', at: Date.now(), bytesTotal: pkg.sizeBytes, bytesDone: Math.round(pkg.sizeBytes * seq / options.recordsPerDevice), bytesFromPeers: 0, bytesFromOrigin: 0
      }
      if (seq === options.recordsPerDevice) record.exitCode = 0
      return signStatusRecord(record, device.key)
    })
    const answer = await expectOk(request(n % 2 === 0 ? a.url : b.url, 'POST', '/v1/agents/status', device.credential, { records }), 'status')
    if (answer.acknowledged.length !== records.length) throw new Error(`status: ${answer.acknowledged.length as number} of ${records.length} acknowledged: ${JSON.stringify(answer.rejected)}`)
  })
  const statusPerSecond = devices.length * options.recordsPerDevice / ((performance.now() - statusStart) / 1000)
  const cpu = process.cpuUsage(cpuStart)
  return {
    enrollPerSecond,
    wakeP50Ms: percentile(wakeMs, 0.5),
    wakeP99Ms: percentile(wakeMs, 0.99),
    statusPerSecond,
    coordinatorCpuSeconds: (cpu.user + cpu.system) / 1e6,
    databaseCpuSeconds: await clusterCpuSeconds(cluster) - dbStart,
    wallSeconds: (performance.now() - wallStart) / 1000
  }
}

/**
 * The store backends side by side in one run: one coordinator on level (the
 * baseline), one on PostgreSQL, and two on one PostgreSQL (devices enroll and
 * report through both, hold their requests on B while the task is created on
 * A). Coordinators run in this process and are driven over loopback HTTP, so
 * the client's CPU is in the coordinator's figure; PostgreSQL's is apart.
 */
export async function storeBackends (init: StoreBackendsOptions = {}): Promise<ScenarioResult> {
  const options: Required<StoreBackendsOptions> = { devices: init.devices ?? 400, recordsPerDevice: init.recordsPerDevice ?? 10, concurrency: init.concurrency ?? 16 }
  const startedAt = new Date().toISOString()
  const began = performance.now()
  const work = await mkdtemp(join(tmpdir(), 'md-bench-stores-'))
  const cluster = await TestPostgres.start()
  const runs: Record<string, Measured> = {}
  try {
    {
      const level = await start(join(work, 'level'), undefined, join(work, 'level-content'))
      try { runs.level = await measure(level, level, options, undefined) } finally { await level.close() }
    }
    {
      const store = await cluster.createDatabase('bench')
      const one = await start(join(work, 'pg-one'), store, join(work, 'pg-one-content'))
      try { runs.postgres = await measure(one, one, options, cluster.folder) } finally { await one.close() }
    }
    {
      const store = await cluster.createDatabase('bench')
      const a = await start(join(work, 'pg-a'), store, join(work, 'pg-shared-content'))
      const b = await start(join(work, 'pg-b'), store, join(work, 'pg-shared-content'))
      try { runs.postgresTwo = await measure(a, b, options, cluster.folder) } finally { await a.close(); await b.close() }
    }
  } finally {
    await cluster.stop()
    await rm(work, { recursive: true, force: true })
  }
  const figures: Figure[] = []
  const ratio = (value: number, base: number): number => Math.round(value / base * 100) / 100
  for (const [name, run] of Object.entries(runs)) {
    const label = name === 'level' ? 'level' : name === 'postgres' ? 'postgres, 1 coordinator' : 'postgres, 2 coordinators'
    figures.push(figure(`${label}: enroll`, Math.round(run.enrollPerSecond), 'devices/s'))
    figures.push(figure(`${label}: wake p99 (task created → held request answered)`, Math.round(run.wakeP99Ms), 'ms', name === 'postgresTwo' ? { atMost: 1000 } : undefined, `p50 ${Math.round(run.wakeP50Ms)} ms${name === 'postgresTwo' ? '; held on B, task created on A' : ''}`))
    figures.push(figure(`${label}: status records`, Math.round(run.statusPerSecond), 'records/s'))
    figures.push(figure(`${label}: CPU`, Math.round(run.coordinatorCpuSeconds * 10) / 10, 'CPU-s', undefined, `coordinator(s) and client; PostgreSQL ${run.databaseCpuSeconds.toFixed(1)} CPU-s; wall ${run.wallSeconds.toFixed(1)} s`))
    if (name !== 'level') {
      figures.push(figure(`${label} ÷ level: enroll/s`, ratio(run.enrollPerSecond, runs.level.enrollPerSecond), '×'))
      figures.push(figure(`${label} ÷ level: status records/s`, ratio(run.statusPerSecond, runs.level.statusPerSecond), '×'))
      figures.push(figure(`${label} ÷ level: wake p99`, ratio(run.wakeP99Ms, runs.level.wakeP99Ms), '×'))
    }
  }
  return { scenario: 'store-backends', startedAt, durationMs: performance.now() - began, parameters: { ...options }, figures, raw: { runs } }
}
