import { createHash } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'

/** What an attacker in the path between an agent and its coordinator turns the assignments answer into. */
export type AssignmentRewrite = (answer: any) => any | Promise<any>

export interface TamperProxy {
  url: string
  /** Replaces the rewrite applied to every assignments answer from now on. */
  rewrite: (rewrite: AssignmentRewrite) => void
  /** While down, every connection is cut at once, as if the coordinator were gone. */
  setDown: (down: boolean) => void
  /** Answers that were not 2xx: path and problem reason, oldest first. */
  refusals: Array<{ path: string, status: number, reason?: string }>
  close: () => Promise<void>
}

const HOLD_MS = 200

/**
 * An HTTP proxy on loopback between an agent and a real coordinator that
 * forwards every request and lets a test rewrite the assignments answers: the
 * man in the middle (or compromised relay) that the agent's verification
 * must defeat. It keeps the long-poll contract: the etag of an answer is that
 * of the rewritten list, and an unchanged list is held briefly rather than
 * answered at once.
 */
export async function startTamperProxy (coordinatorUrl: string): Promise<TamperProxy> {
  const target = new URL(coordinatorUrl)
  let current: AssignmentRewrite = answer => answer
  let down = false
  const refusals: TamperProxy['refusals'] = []
  const server = http.createServer((request, response) => {
    if (down) {
      request.socket.destroy()
      return
    }
    const url = new URL(request.url ?? '/', target)
    const isAssignments = url.pathname === '/v1/agents/assignments'
    const sentEtag = url.searchParams.get('etag') ?? undefined
    if (isAssignments) {
      // Ask for the current list at once; the proxy does the holding on the rewritten one.
      url.searchParams.delete('etag')
      url.searchParams.set('waitSeconds', '0')
    }
    const headers = { ...request.headers, host: target.host }
    const upstream = http.request(url, { method: request.method, headers }, answer => {
      const status = answer.statusCode ?? 502
      if (status >= 300) {
        const parts: Buffer[] = []
        answer.on('data', (part: Buffer) => parts.push(part))
        answer.on('end', () => {
          const body = Buffer.concat(parts)
          let reason: string | undefined
          try { reason = JSON.parse(body.toString('utf8')).reason } catch {}
          refusals.push({ path: url.pathname, status, ...(reason !== undefined ? { reason } : {}) })
          response.writeHead(status, answer.headers)
          response.end(body)
        })
        return
      }
      if (!isAssignments) {
        response.writeHead(status, answer.headers)
        answer.pipe(response)
        return
      }
      const parts: Buffer[] = []
      answer.on('data', (part: Buffer) => parts.push(part))
      answer.on('end', () => {
        void (async () => {
          const rewritten = await current(JSON.parse(Buffer.concat(parts).toString('utf8')))
          rewritten.etag = createHash('sha256').update(JSON.stringify({ ...rewritten, etag: '' })).digest('hex').slice(0, 32)
          if (rewritten.etag === sentEtag) await new Promise(resolve => setTimeout(resolve, HOLD_MS))
          const body = Buffer.from(JSON.stringify(rewritten))
          response.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.byteLength) })
          response.end(body)
        })().catch(error => { response.destroy(error as Error) })
      })
    })
    upstream.on('error', () => { response.destroy() })
    request.pipe(upstream)
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', () => { resolve() }) })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    rewrite: rewrite => { current = rewrite },
    setDown: value => { down = value },
    refusals,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => { server.close(() => { resolve() }) })
    }
  }
}
