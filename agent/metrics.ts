import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { ChunkOrigin } from './download/origin-source.js'
import type { MeshNetwork } from './p2p/network.js'
import type { PieceSource } from './protocols/chunk/index.js'
import type { MetricsListen } from './metrics-listen.js'

export { parseMetricsListen, type MetricsListen } from './metrics-listen.js'

export type ByteSource = 'peer' | 'origin'

/** What the agent's gauges read when scraped. */
export interface AgentMetricsSources {
  connectedPeers: () => number
  cache: () => { usedBytes: number, limitBytes: number, pinnedBytes: number }
  taskStates: () => Promise<Array<{ state: string }>>
}

/**
 * The agent's Prometheus metrics: bytes received by source, the latency of
 * chunk requests by source, bytes served to peers, peers connected, cache
 * size and tasks by state. Served only when the operator asks for it
 * (`--metrics-listen`), on loopback unless told otherwise.
 */
export class AgentMetrics {
  readonly registry = new Registry()
  readonly bytesReceived: Counter<'source'>
  readonly requestSeconds: Histogram<'source' | 'outcome'>
  readonly bytesServed: Counter

  constructor (sources: AgentMetricsSources) {
    collectDefaultMetrics({ register: this.registry, prefix: 'meshdeploy_agent_' })
    this.bytesReceived = new Counter({ name: 'meshdeploy_agent_bytes_received_total', help: 'Package bytes received, by source', labelNames: ['source'], registers: [this.registry] })
    this.requestSeconds = new Histogram({
      name: 'meshdeploy_agent_chunk_request_seconds',
      help: 'Time to get a chunk (or a piece of one, when capped) by source and outcome',
      labelNames: ['source', 'outcome'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry]
    })
    this.bytesServed = new Counter({ name: 'meshdeploy_agent_bytes_served_total', help: 'Bytes of pieces served to site peers', registers: [this.registry] })
    new Gauge({ // eslint-disable-line no-new
      name: 'meshdeploy_agent_peers_connected',
      help: 'Site peers with an open exchange channel',
      registers: [this.registry],
      collect () { this.set(sources.connectedPeers()) }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'meshdeploy_agent_cache_bytes',
      help: 'Chunk cache: bytes used, the limit, and bytes pinned by tasks that need them',
      labelNames: ['kind'],
      registers: [this.registry],
      collect () {
        const stats = sources.cache()
        this.set({ kind: 'used' }, stats.usedBytes)
        this.set({ kind: 'limit' }, stats.limitBytes)
        this.set({ kind: 'pinned' }, stats.pinnedBytes)
      }
    })
    new Gauge({ // eslint-disable-line no-new
      name: 'meshdeploy_agent_tasks',
      help: 'Tasks this device knows, by state',
      labelNames: ['state'],
      registers: [this.registry],
      async collect () {
        this.reset()
        for (const task of await sources.taskStates()) this.inc({ state: task.state })
      }
    })
  }

  private async timed<T extends { byteLength: number }> (source: ByteSource, work: () => Promise<T>): Promise<T> {
    const stop = this.requestSeconds.startTimer({ source })
    try {
      const bytes = await work()
      stop({ outcome: 'ok' })
      this.bytesReceived.inc({ source }, bytes.byteLength)
      return bytes
    } catch (error) {
      stop({ outcome: 'failed' })
      throw error
    }
  }

  /** The origin, counted and timed. */
  origin (origin: ChunkOrigin): ChunkOrigin {
    return { fetchChunk: async (request, options) => await this.timed('origin', async () => await origin.fetchChunk(request, options)) }
  }

  /** The mesh network with its piece requests counted and timed (the same object; everything else as it is). */
  network<T extends MeshNetwork> (network: T): T {
    const requestPiece = network.requestPiece.bind(network)
    network.requestPiece = async (peer, request, options) => await this.timed('peer', async () => await requestPiece(peer, request, options))
    return network
  }

  /** What this agent serves to peers, counted. */
  pieces (source: PieceSource): PieceSource {
    return {
      readPiece: async (request, options) => {
        const bytes = await source.readPiece(request, options)
        this.bytesServed.inc(bytes.byteLength)
        return bytes
      },
      donePiece: bytes => { source.donePiece?.(bytes) }
    }
  }
}



/** Serves GET /metrics and nothing else. */
export async function serveMetrics (metrics: AgentMetrics, listen: MetricsListen): Promise<{ server: Server, url: string }> {
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics is served here\n')
      return
    }
    metrics.registry.metrics().then(text => {
      response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text)
    }, error => {
      response.writeHead(500, { 'content-type': 'text/plain' }).end(`${(error as Error).message}\n`)
    })
  })
  server.requestTimeout = 10_000
  server.headersTimeout = 5_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(listen.port, listen.host, () => { server.off('error', reject); resolve() })
  })
  const { port } = server.address() as AddressInfo
  return { server, url: `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}/metrics` }
}
