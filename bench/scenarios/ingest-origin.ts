import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { adminClient, startMeshdeploy, type BenchProcess } from '../processes.js'
import { writeRandomFile } from '../random-file.js'
import { figure, peakRssBytes, type ScenarioResult } from '../report.js'

const run = promisify(execFile)

export interface IngestOriginOptions {
  /** @default 1024 */
  sizeMiB?: number
}

/**
 * The foundation's figures: how fast the coordinator ingests an upload
 * (chunking, hashing, storing) against `sha256sum` of the same file, and how
 * fast one agent fetches the package from the origin on loopback, with both
 * processes' peak memory.
 */
export async function ingestOrigin (options: IngestOriginOptions = {}): Promise<ScenarioResult> {
  const sizeMiB = options.sizeMiB ?? 1024
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const root = await mkdtemp(join(tmpdir(), 'meshdeploy-bench-ingest-'))
  const processes: BenchProcess[] = []
  try {
    const file = join(root, 'package.bin')
    await writeRandomFile(file, sizeMiB * 1024 * 1024)
    const hashStarted = process.hrtime.bigint()
    await run('sha256sum', [file])
    const sha256sumMs = Number(process.hrtime.bigint() - hashStarted) / 1e6

    const coordinator = await startMeshdeploy(['coordinator', 'start', '--data', join(root, 'coordinator'), '--port', '0', '--log-level', 'warn'], join(root, 'coordinator.log'), 'coordinator-started')
    processes.push(coordinator)
    const api = await adminClient(join(root, 'coordinator'), coordinator.event.url)
    const uploadStarted = process.hrtime.bigint()
    const pkg = await api.uploadPackage(file, { name: 'bench', version: '1' })
    const uploadMs = Number(process.hrtime.bigint() - uploadStarted) / 1e6
    await rm(file)

    const { token } = await api.post('/v1/enrollment-tokens', {})
    await mkdir(join(root, 'agent', 'root'), { recursive: true })
    const agent = await startMeshdeploy(['agent', 'start', '--data', join(root, 'agent'), '--coordinator', coordinator.event.url, '--insecure-http', '--enroll-token', token, '--hostname', 'bench-agent', '--install-root', join(root, 'agent', 'root'), '--log-level', 'warn', '--listen', '/ip4/127.0.0.1/tcp/0', '--mdns', 'off'], join(root, 'agent.log'), 'agent-started')
    processes.push(agent)
    const task = await api.post('/v1/tasks', { packageId: pkg.id, action: 'distribute-files', destination: '/data', targets: { all: true }, maxAttempts: 1 })
    const deadline = Date.now() + 30 * 60_000
    let row: any
    do {
      await new Promise(resolve => setTimeout(resolve, 250))
      row = (await api.get(`/v1/tasks/${task.id}/devices`)).devices[0]
    } while (row?.state !== 'succeeded' && row?.state !== 'failed' && Date.now() < deadline)
    if (row?.state !== 'succeeded') throw new Error(`the agent did not succeed: ${row?.state} ${row?.message ?? ''}`)
    const history = (await api.get(`/v1/tasks/${task.id}/devices/${row.deviceId}/history`)).records as Array<{ state: string, at: number }>
    const downloadStart = history.find(record => record.state === 'downloading')!.at
    const downloadEnd = history.find(record => record.state === 'verifying')!.at
    const downloadMs = downloadEnd - downloadStart
    const coordinatorRss = await peakRssBytes(coordinator.pid)
    const agentRss = await peakRssBytes(agent.pid)
    api.close()

    const bytes = pkg.sizeBytes as number
    const mbps = (ms: number): number => bytes / 1e6 / (ms / 1000)
    return {
      scenario: 'ingest-origin',
      startedAt,
      durationMs: Date.now() - started,
      parameters: { sizeMiB },
      figures: [
        figure('upload ingest rate', mbps(uploadMs), 'MB/s'),
        figure('sha256sum of the same file', mbps(sha256sumMs), 'MB/s'),
        figure('ingest ÷ sha256sum', sha256sumMs / uploadMs, '×', undefined, 'ingest hashes every chunk and the file, and writes each chunk'),
        figure('agent download from the origin (loopback)', mbps(downloadMs), 'MB/s', undefined, 'first downloading record to verifying, by the agent\'s clock'),
        figure('coordinator peak RSS', coordinatorRss / 2 ** 20, 'MiB'),
        figure('agent peak RSS', agentRss / 2 ** 20, 'MiB')
      ],
      raw: { bytes, uploadMs, sha256sumMs, downloadMs, coordinatorRss, agentRss, endToEndMs: Date.parse(row.updatedAt) - Date.parse(task.createdAt) }
    }
  } finally {
    await Promise.all(processes.map(async p => { await p.stop() }))
    await rm(root, { recursive: true, force: true })
  }
}
