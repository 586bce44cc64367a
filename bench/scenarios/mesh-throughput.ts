import { spawn } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { BENCH_DIR, figure, type ScenarioResult } from '../report.js'
import { BenchSite } from './mesh-site.js'

const RAW_STREAM = resolve(BENCH_DIR, '../dist/bench/raw-stream.js')

export interface MeshThroughputOptions {
  /** @default 256 */
  sizeMiB?: number
  /** @default 3 */
  repeats?: number
}

export interface RawStreamRun {
  ms: number
  /** CPU of each side while the bytes moved. */
  senderCpuSeconds: number
  receiverCpuSeconds: number
}

/** The same bytes over one raw libp2p stream between two processes: the transport's own rate. */
export async function rawStreamMs (bytes: number): Promise<number> {
  return (await rawStream(bytes)).ms
}

/** The same bytes over one raw libp2p stream between two processes: the transport's own rate and CPU. */
export async function rawStream (bytes: number): Promise<RawStreamRun> {
  const receiver = spawn(process.execPath, [RAW_STREAM, 'receive'], { stdio: ['pipe', 'pipe', 'inherit'] })
  try {
    const address = await new Promise<string>((resolve, reject) => {
      receiver.once('exit', code => { reject(new Error(`the raw receiver exited with ${code}`)) })
      createInterface({ input: receiver.stdout! }).once('line', resolve)
    })
    const sender = spawn(process.execPath, [RAW_STREAM, 'send', address, String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] })
    const line = await new Promise<string>((resolve, reject) => {
      sender.once('exit', code => { if (code !== 0) reject(new Error(`the raw sender exited with ${code}`)) })
      createInterface({ input: sender.stdout! }).once('line', resolve)
    })
    return JSON.parse(line) as RawStreamRun
  } finally {
    receiver.stdin!.end()
  }
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

/**
 * One agent fetching a package from one peer that holds it, uncapped, on
 * loopback, against a raw libp2p noise+yamux stream of the same bytes
 * measured in the same run. Between repeats the downloader's cache is
 * cleared through the API, so every run fetches everything.
 */
export async function meshThroughput (options: MeshThroughputOptions = {}): Promise<ScenarioResult> {
  const sizeMiB = options.sizeMiB ?? 256
  const repeats = options.repeats ?? 3
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const site = await BenchSite.open('throughput')
  try {
    const seed = await site.agent('seed')
    const pkg = await site.package(sizeMiB)
    await site.distribute(pkg.id, [seed])
    const downloader = await site.agent('downloader')
    await site.connected([seed, downloader], 1)
    const agentMs: number[] = []
    const rawMs: number[] = []
    const fromPeers: number[] = []
    for (let run = 1; run <= repeats; run++) {
      rawMs.push(await rawStreamMs(pkg.sizeBytes))
      const { task, rows } = await site.distribute(pkg.id, [downloader])
      agentMs.push(await site.downloadMs(task.id, downloader.deviceId))
      fromPeers.push(rows[0].bytesFromPeers)
      await rm(join(downloader.dataDir, 'root', 'data'), { recursive: true, force: true })
      await site.api.post(`/v1/devices/${downloader.deviceId}/clear-cache`)
      for (let wait = 0; wait < 300; wait++) {
        const view = await site.api.get(`/v1/devices/${downloader.deviceId}`)
        if (view.cacheClearedRequest === run) break
        await new Promise(resolve => setTimeout(resolve, 100))
      }
    }
    const rate = (ms: number): number => pkg.sizeBytes / 1e6 / (ms / 1000)
    const agentRate = rate(median(agentMs))
    const rawRate = rate(median(rawMs))
    return {
      scenario: 'mesh-throughput',
      startedAt,
      durationMs: Date.now() - started,
      parameters: { sizeMiB, repeats, chunkSizeBytes: pkg.chunkSizeBytes },
      figures: [
        figure('agent from one peer, uncapped (median)', agentRate, 'MB/s', undefined, 'downloading → verifying by the agent\'s clock: pieces, hashing, cache writes'),
        figure('raw libp2p noise+yamux stream (median)', rawRate, 'MB/s', undefined, 'same bytes, two processes, nothing done with them'),
        figure('agent ÷ raw stream', agentRate / rawRate, '×', { atLeast: 0.8 })
      ],
      raw: { bytes: pkg.sizeBytes, agentMs, rawMs, fromPeers }
    }
  } finally {
    await site.close()
  }
}
