import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

/** One answer of the origin (GET /v1/content/:sha256) as it crossed the proxy. */
export interface ContentAnswer {
  /** The name of the proxy port the agent talks through. */
  agent: string
  sha256: string
  status: number
  /** The bytes of the chunk asked for: [start, end). */
  start: number
  end: number
  /** Bytes of the body handed on to the agent. */
  sentBytes: number
  /** Whether the whole body was handed on. */
  complete: boolean
}

/** A content answer the proxy stopped in the middle. */
export interface Interrupted {
  agent: string
  sha256: string
  sentBytes: number
}

/**
 * An HTTP proxy on loopback in front of a real coordinator, one port per
 * agent so that every answer is known by the agent it went to. It counts
 * every byte of content it hands on, and can stop one content answer of an
 * agent in the middle: `stall` holds the connection open with no more bytes
 * (the agent is then killed by the test), `cut` closes it (a dropped
 * connection the agent resumes from).
 */
export class OriginProxy {
  readonly answers: ContentAnswer[] = []
  private readonly servers: http.Server[] = []
  private readonly sockets = new Set<Socket>()
  private readonly plans = new Map<string, { how: 'stall' | 'cut', afterBytes: number, done: (interrupted: Interrupted) => void }>()

  constructor (private readonly target: URL) {}

  /** Opens a port for one agent; its URL is the coordinator URL that agent is given. */
  async listen (agent: string): Promise<string> {
    const server = http.createServer((request, response) => { this.forward(agent, request, response) })
    server.on('connection', socket => {
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    this.servers.push(server)
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  /** The next content answer to this agent stops after `afterBytes` bytes; resolves when it did. */
  async interruptNext (agent: string, how: 'stall' | 'cut', afterBytes: number): Promise<Interrupted> {
    return await new Promise(resolve => { this.plans.set(agent, { how, afterBytes, done: resolve }) })
  }

  /** Bytes of content handed on, per chunk (every answer, whole or not). */
  bytesByChunk (): Map<string, number> {
    const out = new Map<string, number>()
    for (const answer of this.answers) out.set(answer.sha256, (out.get(answer.sha256) ?? 0) + answer.sentBytes)
    return out
  }

  private forward (agent: string, request: http.IncomingMessage, response: http.ServerResponse): void {
    const content = request.method === 'GET' ? /^\/v1\/content\/([0-9a-f]{64})$/.exec(request.url ?? '') : null
    const upstream = http.request({
      host: this.target.hostname,
      port: this.target.port,
      method: request.method,
      path: request.url,
      headers: { ...request.headers, host: this.target.host }
    }, answer => {
      response.writeHead(answer.statusCode ?? 502, answer.headers)
      if (content === null || (answer.statusCode !== 200 && answer.statusCode !== 206)) {
        answer.pipe(response)
        return
      }
      const length = Number(answer.headers['content-length'])
      const range = /^bytes=(\d+)-(\d+)$/.exec(String(request.headers.range ?? ''))
      const start = range !== null ? Number(range[1]) : 0
      const record: ContentAnswer = { agent, sha256: content[1], status: answer.statusCode, start, end: range !== null ? Number(range[2]) + 1 : length, sentBytes: 0, complete: false }
      this.answers.push(record)
      const plan = this.plans.get(agent)
      if (plan !== undefined) this.plans.delete(agent)
      answer.on('data', (piece: Buffer) => {
        if (plan !== undefined && record.sentBytes + piece.byteLength >= plan.afterBytes) {
          const part = piece.subarray(0, plan.afterBytes - record.sentBytes)
          record.sentBytes += part.byteLength
          answer.destroy()
          // Handed on in full before the connection is dropped (or held).
          response.write(part, () => {
            if (plan.how === 'cut') response.socket?.destroy()
            plan.done({ agent, sha256: record.sha256, sentBytes: record.sentBytes })
          })
          return
        }
        record.sentBytes += piece.byteLength
        if (!response.write(piece)) {
          answer.pause()
          response.once('drain', () => answer.resume())
        }
      })
      answer.on('end', () => {
        record.complete = record.sentBytes === length
        response.end()
      })
    })
    upstream.on('error', () => { response.socket?.destroy() })
    request.pipe(upstream)
    response.on('close', () => { upstream.destroy() })
  }

  async close (): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    await Promise.all(this.servers.map(async server => { await new Promise<void>(resolve => { server.close(() => { resolve() }) }) }))
  }
}
