import { createConnection, createServer, type Server, type Socket } from 'node:net'

export interface Backend {
  host: string
  port: number
}

/**
 * A TCP load balancer in front of several coordinators, as an operator
 * would run one: each connection goes to the first backend that accepts it,
 * in order; a backend that refuses (it is down) is passed over.
 */
export class TestBalancer {
  private constructor (private readonly server: Server, private readonly sockets: Set<Socket>, readonly port: number) {}

  static async start (backends: () => Backend[]): Promise<TestBalancer> {
    const sockets = new Set<Socket>()
    const track = (socket: Socket): void => {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
    }
    const server = createServer(client => {
      track(client)
      client.pause()
      client.on('error', () => {})
      const list = backends()
      const attempt = (at: number): void => {
        if (at >= list.length || client.destroyed) {
          client.destroy()
          return
        }
        let connected = false
        const upstream = createConnection(list[at])
        track(upstream)
        upstream.on('error', () => {
          if (!connected) attempt(at + 1)
          else client.destroy()
        })
        upstream.once('connect', () => {
          connected = true
          upstream.on('close', () => client.destroy())
          client.on('close', () => upstream.destroy())
          client.pipe(upstream)
          upstream.pipe(client)
          client.resume()
        })
      }
      attempt(0)
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    return new TestBalancer(server, sockets, (server.address() as { port: number }).port)
  }

  get url (): string {
    return `http://127.0.0.1:${this.port}`
  }

  async stop (): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    await new Promise<void>(resolve => this.server.close(() => { resolve() }))
  }
}
