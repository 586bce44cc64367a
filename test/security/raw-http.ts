import { connect } from 'node:net'

export interface RawAnswer {
  status: number
  headers: Record<string, string>
  body: any
  type: string
  /** The server closed the connection after its answer. */
  closed: boolean
}

/**
 * Writes bytes to the coordinator over a bare socket — a slow, partial or
 * endless request no HTTP client library would send — and reads the answer
 * until the server closes the connection (or `timeoutMs`).
 */
export async function rawExchange (port: number, pieces: Array<string | Buffer>, timeoutMs = 15_000): Promise<RawAnswer> {
  const socket = connect(port, '127.0.0.1')
  const received: Buffer[] = []
  let closed = false
  await new Promise<void>(resolve => {
    const timer = setTimeout(() => { socket.destroy(); resolve() }, timeoutMs)
    socket.on('data', piece => received.push(piece))
    socket.on('error', () => {})
    socket.on('close', () => { closed = true; clearTimeout(timer); resolve() })
    socket.on('connect', () => {
      for (const piece of pieces) {
        if (socket.destroyed) break
        socket.write(piece)
      }
    })
  })
  const text = Buffer.concat(received).toString('utf8')
  const split = text.indexOf('\r\n\r\n')
  const head = split === -1 ? text : text.slice(0, split)
  const [statusLine, ...headerLines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  const rawBody = split === -1 ? '' : text.slice(split + 4)
  let body: any = rawBody
  try {
    body = JSON.parse(rawBody)
  } catch {}
  return {
    status: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0),
    headers,
    body,
    type: (headers['content-type'] ?? '').split(';')[0],
    closed
  }
}
