import { createServer } from 'node:net'
import { CountingProxy, perSecond, windowRates, type Sample } from '../counting-proxy.js'
import { figure, type Figure, type ScenarioResult } from '../report.js'
import { BenchSite } from './mesh-site.js'

export interface MeshCapOptions {
  /** @default 32 */
  sizeMiB?: number
  /** The task's cap, KB/s of 1024 bytes. @default 4096 */
  capKBps?: number
}

async function freePort (): Promise<number> {
  return await new Promise(resolve => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => { resolve(port) })
    })
  })
}

/**
 * A capped device's download rate against its cap, as bytes on the wire:
 * counting proxies sit between the device and each of its sources (the
 * coordinator's origin, and a seed peer that announces the proxy's address),
 * and every one-second window of what came through is compared with the
 * cap. Two cases: every chunk from a peer; every chunk from the origin.
 */
export async function meshCap (options: MeshCapOptions = {}): Promise<ScenarioResult> {
  const sizeMiB = options.sizeMiB ?? 32
  const capKBps = options.capKBps ?? 4096
  const capBytesPerSecond = capKBps * 1024
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const figures: Figure[] = []
  const raw: Record<string, unknown> = {}

  const measure = async (label: string, withSeed: boolean): Promise<void> => {
    const site = await BenchSite.open(`cap-${label}`)
    const proxies: CountingProxy[] = []
    try {
      const originProxy = await CountingProxy.open(Number(new URL(site.url).port))
      proxies.push(originProxy)
      const samples: Sample[][] = [originProxy.samples]
      const pkg = await site.package(sizeMiB)
      const agents = []
      if (withSeed) {
        // The seed is reached only through a proxy: it announces the proxy's address and does not dial the device itself.
        const seedPort = await freePort()
        const peerProxy = await CountingProxy.open(seedPort)
        proxies.push(peerProxy)
        samples.push(peerProxy.samples)
        const seed = await site.agent('seed', ['--listen', `/ip4/127.0.0.1/tcp/${seedPort}`, '--announce', `/ip4/127.0.0.1/tcp/${peerProxy.port}`, '--peer-list', 'off'])
        await site.distribute(pkg.id, [seed])
        agents.push(seed)
      }
      const capped = await site.agent('capped', [], `http://127.0.0.1:${originProxy.port}`)
      if (withSeed) await site.connected([capped], 1)
      const { task, rows } = await site.distribute(pkg.id, [capped], { bandwidthKBps: capKBps })
      const { records } = await site.api.get(`/v1/tasks/${task.id as string}/devices/${capped.deviceId}/history`)
      const fromMs = records.find((record: any) => record.state === 'downloading').at as number
      const toMs = records.find((record: any) => record.state === 'verifying').at as number
      const rates = windowRates(samples.flat(), fromMs, toMs)
      figures.push(figure(`${label}: average rate ÷ cap`, rates.averageBytesPerSecond / capBytesPerSecond, '×', { atLeast: 0.9 }))
      figures.push(figure(`${label}: worst 1-second window ÷ cap`, rates.worstWindowBytes / capBytesPerSecond, '×', { atMost: 1.05 }, 'wire bytes: HTTP, noise and yamux framing included'))
      raw[label] = { fromMs, toMs, ...rates, perSecond: perSecond(samples.flat(), fromMs, toMs), bytesFromPeers: rows[0].bytesFromPeers, bytesFromOrigin: rows[0].bytesFromOrigin, packageBytes: pkg.sizeBytes }
    } finally {
      await site.close()
      for (const proxy of proxies) await proxy.close()
    }
  }

  await measure('from a peer', true)
  await measure('from the origin', false)
  return { scenario: 'mesh-cap', startedAt, durationMs: Date.now() - started, parameters: { sizeMiB, capKBps }, figures, raw }
}
