import { createConnection, createServer, type Server, type Socket } from 'node:net'

/** Bytes that passed at a moment, by the bench's clock. */
export interface Sample {
  atMs: number
  bytes: number
}

/**
 * A TCP proxy on loopback that records every piece of data going from the
 * target back to the client (the client's download) with its arrival time:
 * what a capped device actually received, as bytes on the wire.
 */
export class CountingProxy {
  readonly samples: Sample[] = []
  private readonly server: Server
  private readonly sockets = new Set<Socket>()

  private constructor (server: Server) {
    this.server = server
  }

  static async open (targetPort: number): Promise<CountingProxy> {
    const server = createServer()
    const proxy = new CountingProxy(server)
    server.on('connection', client => {
      const upstream = createConnection({ host: '127.0.0.1', port: targetPort })
      // Transparent: no Nagle delay on the small frames of request/response protocols.
      client.setNoDelay(true)
      upstream.setNoDelay(true)
      proxy.sockets.add(client)
      proxy.sockets.add(upstream)
      upstream.on('data', data => { proxy.samples.push({ atMs: Date.now(), bytes: data.byteLength }) })
      client.pipe(upstream)
      upstream.pipe(client)
      const close = (): void => { client.destroy(); upstream.destroy(); proxy.sockets.delete(client); proxy.sockets.delete(upstream) }
      client.on('error', close)
      upstream.on('error', close)
      client.on('close', close)
      upstream.on('close', close)
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    return proxy
  }

  get port (): number {
    return (this.server.address() as { port: number }).port
  }

  async close (): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    await new Promise<void>(resolve => this.server.close(() => { resolve() }))
  }
}

/** Bytes per consecutive second from `fromMs`: the shape of a transfer. */
export function perSecond (samples: Sample[], fromMs: number, toMs: number): number[] {
  const out = new Array<number>(Math.max(1, Math.ceil((toMs - fromMs) / 1000))).fill(0)
  for (const sample of samples) {
    if (sample.atMs < fromMs || sample.atMs > toMs) continue
    out[Math.min(out.length - 1, Math.floor((sample.atMs - fromMs) / 1000))] += sample.bytes
  }
  return out
}

/** Average and worst one-second window of samples between two times, in bytes per second. */
export function windowRates (samples: Sample[], fromMs: number, toMs: number, stepMs = 10): { averageBytesPerSecond: number, worstWindowBytes: number, totalBytes: number } {
  const inside = samples.filter(sample => sample.atMs >= fromMs && sample.atMs <= toMs).sort((a, b) => a.atMs - b.atMs)
  const totalBytes = inside.reduce((sum, sample) => sum + sample.bytes, 0)
  let worst = 0
  let head = 0
  let sum = 0
  let tail = 0
  for (let start = fromMs; start + 1000 <= toMs; start += stepMs) {
    while (tail < inside.length && inside[tail].atMs < start + 1000) sum += inside[tail++].bytes
    while (head < tail && inside[head].atMs < start) sum -= inside[head++].bytes
    worst = Math.max(worst, sum)
  }
  return { averageBytesPerSecond: totalBytes / ((toMs - fromMs) / 1000), worstWindowBytes: worst, totalBytes }
}
