import { createServer, type Server } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { CoordinatorApp } from './app.js'

export interface ServerTls {
  /** PEM certificate (chain). */
  cert: Buffer | string
  /** PEM private key. */
  key: Buffer | string
}

/**
 * The coordinator's HTTP(S) server around its app, with the slow-client
 * bounds: headers (and the TLS handshake) within `headersTimeoutMs`, an idle
 * socket closed after two minutes; request bodies have their own clocks.
 */
export function createCoordinatorServer (app: CoordinatorApp, tls?: ServerTls): Server {
  const headersTimeout = app.limits.headersTimeoutMs
  const options = {
    // Uploads of several GiB and held-open assignment requests outlive a whole-request deadline; bodies are bounded by their idle clock instead.
    requestTimeout: 0,
    headersTimeout,
    keepAliveTimeout: 65_000,
    // How often Node looks for connections past headersTimeout; its default (30 s) would let a slow client hold a socket far longer.
    connectionsCheckingInterval: Math.max(50, Math.min(30_000, Math.floor(headersTimeout / 4)))
  }
  const server: Server = tls !== undefined
    ? createTlsServer({ ...options, cert: tls.cert, key: tls.key, handshakeTimeout: headersTimeout, minVersion: 'TLSv1.2' }, app.callback())
    : createServer(options, app.callback())
  server.setTimeout(120_000)
  return server
}
