import http from 'node:http'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  generateKeyPair, openStatusRecord, signStatusRecord, toHex, trustKeys, type DeviceTaskState, type Ed25519KeyPair, type SignedEnvelope, type StatusRecord
} from '../../protocol/index.js'
import { adminClient, startMeshdeploy, type BenchProcess } from '../processes.js'
import { cpuSeconds, figure, type ScenarioResult } from '../report.js'

export interface StatusIngestOptions {
  /** Records sent in the measured, concurrent phase. @default 60_000 */
  records?: number
  /** Devices whose records are sent (each batch mixes them, as a site relay's does). @default 40 */
  devices?: number
  /** Records per request. @default 500 */
  batch?: number
  /** Requests in flight at once in the concurrent phase. @default 8 */
  concurrency?: number
}

interface Device {
  id: string
  credential: string
  key: Ed25519KeyPair
}

interface Batch {
  via: Device
  body: Buffer
  count: number
}

const STATES: DeviceTaskState[] = ['queued', 'downloading', 'downloading', 'downloading', 'verifying', 'installing']

/** A device's records for a task, seq `from` to `to`; the last one succeeded. Their byte counts are the package's: the coordinator refuses records that claim more. */
function recordsOf (device: Device, taskId: string, from: number, to: number, last: number, bytesTotal: number): SignedEnvelope[] {
  const out: SignedEnvelope[] = []
  for (let seq = from; seq <= to; seq++) {
    const done = Math.min(bytesTotal, Math.round(bytesTotal * seq / last))
    const record: StatusRecord = {
      type: 'meshdeploy.status',
      deviceId: device.id,
      taskId,
      revision: 1,
      attempt: 1,
      seq,
      state: seq === last ? 'succeeded' : STATES[seq % STATES.length],
      at: Date.now(),
      bytesTotal,
      bytesDone: done,
      bytesFromPeers: Math.round(done * 0.9),
      bytesFromOrigin: done - Math.round(done * 0.9)
    }
    if (seq === last) record.exitCode = 0
    out.push(signStatusRecord(record, device.key))
  }
  return out
}

/** Interleaves the devices' records into batches, as a relay gathering a whole site's records sends them. */
function batchesOf (perDevice: SignedEnvelope[][], devices: Device[], size: number): Batch[] {
  const mixed: SignedEnvelope[] = []
  const longest = Math.max(...perDevice.map(records => records.length))
  for (let index = 0; index < longest; index++) for (const records of perDevice) if (index < records.length) mixed.push(records[index])
  const out: Batch[] = []
  for (let start = 0; start < mixed.length; start += size) {
    const records = mixed.slice(start, start + size)
    out.push({ via: devices[out.length % devices.length], body: Buffer.from(JSON.stringify({ records })), count: records.length })
  }
  return out
}

interface Answer { acknowledged: string[], rejected: unknown[], duplicates: number }

async function post (agent: http.Agent, url: URL, batch: Batch): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const request = http.request(new URL('/v1/agents/status', url), {
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/json', 'content-length': String(batch.body.byteLength), authorization: `Bearer ${batch.via.credential}` }
    }, response => {
      const parts: Buffer[] = []
      response.on('data', (part: Buffer) => parts.push(part))
      response.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8')
        if (response.statusCode !== 200) reject(new Error(`HTTP ${response.statusCode ?? 0}: ${text.slice(0, 300)}`))
        else resolve(JSON.parse(text) as Answer)
      })
      response.on('error', reject)
    })
    request.on('error', reject)
    request.end(batch.body)
  })
}

/** Sends the batches with `concurrency` requests in flight; returns the wall time and the coordinator's CPU time. */
async function send (url: URL, pid: number, batches: Batch[], concurrency: number, expectFresh: boolean): Promise<{ wallMs: number, cpuMs: number, duplicates: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency })
  let next = 0
  let duplicates = 0
  const cpuBefore = await cpuSeconds(pid)
  const started = process.hrtime.bigint()
  const worker = async (): Promise<void> => {
    while (next < batches.length) {
      const batch = batches[next++]
      const answer = await post(agent, url, batch)
      if (answer.rejected.length > 0) throw new Error(`records refused: ${JSON.stringify(answer.rejected.slice(0, 3))}`)
      if (answer.acknowledged.length !== batch.count) throw new Error(`${answer.acknowledged.length} of ${batch.count} records acknowledged`)
      if (expectFresh && answer.duplicates !== 0) throw new Error(`${answer.duplicates} fresh records were taken for duplicates`)
      duplicates += answer.duplicates
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6
  const cpuMs = (await cpuSeconds(pid) - cpuBefore) * 1000
  agent.destroy()
  return { wallMs, cpuMs, duplicates }
}

function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const swap = items[i]
    items[i] = items[j]
    items[j] = swap
  }
  return items
}

async function enroll (url: string, token: string, index: number): Promise<Device> {
  const key = generateKeyPair()
  for (;;) {
    const response = await fetch(new URL('/v1/agents/enroll', url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, publicKey: toHex(key.publicKey), hostname: `load-${index}`, platform: 'linux', arch: 'x64', site: 'load' })
    })
    if (response.status === 429) {
      await new Promise(resolve => setTimeout(resolve, 1000 * Number(response.headers.get('retry-after') ?? 1)))
      continue
    }
    if (response.status !== 201) throw new Error(`enrollment failed: HTTP ${response.status} ${await response.text()}`)
    const answer = await response.json() as { deviceId: string, credential: string }
    return { id: answer.deviceId, credential: answer.credential, key }
  }
}

/**
 * The coordinator's status ingest: a load generator sends batches of
 * device-signed records over loopback, each batch mixing many devices'
 * records (what a site relay sends), and the coordinator verifies each
 * signature, de-duplicates and stores durably before it answers. Measured
 * twice in the same run: one batch at a time (the baseline), then with
 * several in flight. Afterwards a share of the batches is sent again in
 * another order, and the rows must still be exactly the newest records.
 */
export async function statusIngest (options: StatusIngestOptions = {}): Promise<ScenarioResult> {
  const records = options.records ?? 60_000
  const deviceCount = options.devices ?? 40
  const batchSize = options.batch ?? 500
  const concurrency = options.concurrency ?? 8
  const serialRecords = Math.max(batchSize * 4, Math.round(records / 4))
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const root = await mkdtemp(join(tmpdir(), 'meshdeploy-bench-status-'))
  let coordinator: BenchProcess | undefined
  try {
    coordinator = await startMeshdeploy(['coordinator', 'start', '--data', join(root, 'coordinator'), '--port', '0', '--log-level', 'warn'], join(root, 'coordinator.log'), 'coordinator-started')
    const url = new URL(coordinator.event.url as string)
    const api = await adminClient(join(root, 'coordinator'), url.toString())
    const { token } = await api.post('/v1/enrollment-tokens', { maxUses: deviceCount })
    const devices: Device[] = []
    for (let index = 0; index < deviceCount; index++) devices.push(await enroll(url.toString(), token as string, index))
    await writeFile(join(root, 'tiny.txt'), 'status ingest\n')
    const pkg = await api.uploadPackage(join(root, 'tiny.txt'), { name: 'status-ingest', version: '1' })
    const taskOf = async (): Promise<string> => (await api.post('/v1/tasks', {
      packageId: pkg.id, action: 'distribute-files', destination: '/srv/status-ingest', targets: { deviceIds: devices.map(device => device.id) }, maxAttempts: 1
    })).id as string

    // Every record is signed before the clock starts: the generator's own work is only sending.
    const perDevice = Math.ceil(records / deviceCount)
    const serialPerDevice = Math.ceil(serialRecords / deviceCount)
    const serialTask = await taskOf()
    const concurrentTask = await taskOf()
    const serialSets = devices.map(device => recordsOf(device, serialTask, 1, serialPerDevice, serialPerDevice, pkg.sizeBytes))
    const concurrentSets = devices.map(device => recordsOf(device, concurrentTask, 1, perDevice, perDevice, pkg.sizeBytes))
    const serialBatches = batchesOf(serialSets, devices, batchSize)
    const concurrentBatches = batchesOf(concurrentSets, devices, batchSize)

    // The ceiling: verifying the same records in this process, one core, nothing else.
    const keys = new Map(devices.map(device => [device.id, trustKeys(device.key.publicKey)]))
    const sample = concurrentSets.flat().slice(0, 20_000)
    const verifyStarted = process.hrtime.bigint()
    for (const envelope of sample) {
      const id = JSON.parse(Buffer.from(envelope.payload, 'base64').toString('utf8')).deviceId as string
      openStatusRecord(envelope, keys.get(id)!)
    }
    const verifyPerSecond = sample.length / (Number(process.hrtime.bigint() - verifyStarted) / 1e9)

    const serial = await send(url, coordinator.pid, serialBatches, 1, true)
    const concurrent = await send(url, coordinator.pid, concurrentBatches, concurrency, true)
    const serialTotal = serialBatches.reduce((sum, batch) => sum + batch.count, 0)
    const concurrentTotal = concurrentBatches.reduce((sum, batch) => sum + batch.count, 0)
    const serialRate = serialTotal / (serial.wallMs / 1000)
    const concurrentRate = concurrentTotal / (concurrent.wallMs / 1000)

    // Duplicates and reordering: a fifth of the batches again, shuffled, records shuffled inside.
    const again = shuffle(concurrentBatches.filter((_, index) => index % 5 === 0)).map(batch => {
      const body = JSON.parse(batch.body.toString('utf8')) as { records: SignedEnvelope[] }
      return { ...batch, body: Buffer.from(JSON.stringify({ records: shuffle(body.records) })) }
    })
    const replay = await send(url, coordinator.pid, again, concurrency, false)
    const replayed = again.reduce((sum, batch) => sum + batch.count, 0)
    if (replay.duplicates !== replayed) throw new Error(`${replayed} records sent again, ${replay.duplicates} taken for duplicates`)
    const view = await api.get(`/v1/tasks/${concurrentTask}`)
    const { devices: rows } = await api.get(`/v1/tasks/${concurrentTask}/devices`)
    const exact = rows.length === deviceCount && rows.every((row: any) => row.seq === perDevice && row.state === 'succeeded') && view.progress.succeeded === deviceCount
    if (!exact) throw new Error('the rows are not the newest records after duplicates and reordering')
    const adminToken = (await readFile(join(root, 'coordinator', 'admin-token'), 'utf8')).trim()
    const metrics = await (await fetch(new URL('/metrics', url), { headers: { authorization: `Bearer ${adminToken}` } })).text()
    api.close()

    const figures = [
      figure('status records stored per second, concurrent batches', concurrentRate, 'records/s', { atLeast: 5000 }, `${concurrency} requests in flight, ${batchSize} records each`),
      figure('status records stored per second, one batch at a time', serialRate, 'records/s', undefined, 'baseline, same run'),
      figure('concurrent ÷ one at a time', concurrentRate / serialRate, '×'),
      figure('records per coordinator CPU second, concurrent', concurrentTotal / (concurrent.cpuMs / 1000), 'records/s', undefined, 'independent of other load on the machine'),
      figure('signature verification alone, one core', verifyPerSecond, 'records/s', undefined, 'ceiling, same records, in the generator'),
      figure('ingest ÷ verification alone', concurrentRate / verifyPerSecond, '×'),
      figure('records sent again (shuffled) taken for duplicates', replay.duplicates / replayed, '×', { atLeast: 1 }, 'rows stayed the newest records')
    ]
    return {
      scenario: 'status-ingest',
      startedAt,
      durationMs: Date.now() - started,
      parameters: { records: concurrentTotal, serialRecords: serialTotal, devices: deviceCount, batch: batchSize, concurrency },
      figures,
      raw: { serial, concurrent, replay: { ...replay, records: replayed }, verifyPerSecond, metrics: metrics.split('\n').filter(line => line.startsWith('meshdeploy_status')) }
    }
  } catch (error) {
    const log = await readFile(join(root, 'coordinator.log'), 'utf8').catch(() => '')
    throw new Error(`${(error as Error).message}\ncoordinator log (last lines):\n${log.split('\n').slice(-20).join('\n')}`, { cause: error })
  } finally {
    await coordinator?.stop()
    await rm(root, { recursive: true, force: true })
  }
}
