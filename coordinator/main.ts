import '../protocol/polyfill.js'
import type { Server } from 'node:http'
import { chmod, readFile, rm, writeFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { createApp } from './http/app.js'
import { createCoordinatorServer } from './http/server.js'
import type { HttpLimitsInit } from './http/request-limits.js'
import { openServices, type Services } from './services.js'
import { describeStore } from './store/open.js'
import { createLogger, type Logger, type LogLevel } from '../protocol/logger.js'
import { certificateFingerprint } from '../protocol/index.js'

/** Connections the kernel may queue for the coordinator before it accepts them. */
export const LISTEN_BACKLOG = 4096

export interface CoordinatorInit {
  dataDir: string
  /** `level` or a PostgreSQL address (postgres://USER@HOST:PORT/DB) shared with other coordinators. @default 'level' */
  store?: string
  /** Where chunks are kept (may be a folder shared by several coordinators). @default DATA/content */
  contentDir?: string
  /** @default '127.0.0.1' */
  host?: string
  /** 0 picks a free port. @default 8650 */
  port?: number
  /** @default 8 GiB */
  maxPackageBytes?: number
  /** @default 1 MiB */
  chunkSizeBytes?: number
  /** The URL agents are told to use; @default the listening address */
  publicUrl?: string
  logger?: Logger
  logLevel?: LogLevel
  /** PEM certificate (chain) file: with tlsKeyPath, the API is served over HTTPS. */
  tlsCertPath?: string
  /** PEM private key file of the certificate. */
  tlsKeyPath?: string
  /** Rate limits and slow-client timeouts; defaults in http/request-limits.ts. */
  limits?: HttpLimitsInit
  /** The clock; tests move it to reach a task's start or expiry. @default Date.now */
  now?: () => number
  /** Where push installs find the agent packages. @default dist-packages/ of this checkout */
  agentPackagesDir?: string
  /** Reconnects per second the agents' return after a restart is spread to. @default DEFAULT_RECONNECTS_PER_SECOND */
  reconnectsPerSecond?: number
}

export const DEFAULT_PORT = 8650

export interface RunningCoordinator {
  url: string
  port: number
  services: Services
  server: Server
  close: () => Promise<void>
}

function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))
}

/** Opens the coordinator's data folder and serves its API. */
export async function startCoordinator (init: CoordinatorInit): Promise<RunningCoordinator> {
  if ((init.tlsCertPath === undefined) !== (init.tlsKeyPath === undefined)) throw new TypeError('TLS needs both a certificate and its key')
  const logger = init.logger ?? createLogger(init.logLevel ?? 'info', 'coordinator')
  const services = await openServices({
    dataDir: init.dataDir,
    logger,
    ...(init.store !== undefined ? { store: init.store } : {}),
    ...(init.contentDir !== undefined ? { contentDir: init.contentDir } : {}),
    ...(init.maxPackageBytes !== undefined ? { maxPackageBytes: init.maxPackageBytes } : {}),
    ...(init.chunkSizeBytes !== undefined ? { chunkSizeBytes: init.chunkSizeBytes } : {}),
    ...(init.now !== undefined ? { now: init.now } : {}),
    ...(init.agentPackagesDir !== undefined ? { agentPackagesDir: init.agentPackagesDir } : {}),
    ...(init.reconnectsPerSecond !== undefined ? { reconnectsPerSecond: init.reconnectsPerSecond } : {})
  })
  const adminTokenPath = join(init.dataDir, 'admin-token')
  if (services.bootstrapAdminToken !== undefined) {
    await writeFile(adminTokenPath, services.bootstrapAdminToken + '\n', { mode: 0o600 })
    await chmod(adminTokenPath, 0o600)
    logger.info({ path: adminTokenPath }, 'created the first admin token')
  }
  const app = createApp(services, init.limits !== undefined ? { limits: init.limits } : {})
  const tls = init.tlsCertPath !== undefined && init.tlsKeyPath !== undefined
  const certificate = tls ? await readFile(init.tlsCertPath!) : undefined
  const server = createCoordinatorServer(app, tls ? { cert: certificate!, key: await readFile(init.tlsKeyPath!) } : undefined)
  const host = init.host ?? '127.0.0.1'
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    // A fleet that reconnects at once queues its connections here rather than finding the accept queue full (Node's default
    // backlog is 511; the kernel caps the value at net.core.somaxconn).
    server.listen({ port: init.port ?? DEFAULT_PORT, host, backlog: LISTEN_BACKLOG }, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  const url = init.publicUrl ?? `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`
  // Agents a push installs reach the coordinator here, and pin its certificate.
  services.pushInstalls.setEndpoint({ url, ...(certificate !== undefined ? { pinSha256: certificateFingerprint(certificate.toString('utf8')) } : {}) })
  if (!tls && !isLoopback(host)) logger.warn({ host }, 'serving plain HTTP beyond loopback: tokens and credentials cross the network unprotected; pass --tls-cert and --tls-key')
  const endpointPath = join(init.dataDir, 'endpoint.json')
  await writeFile(endpointPath, JSON.stringify({ url, pid: process.pid, adminTokenPath }) + '\n', { mode: 0o600 })
  logger.info({ url, dataDir: init.dataDir, store: describeStore(init.store ?? 'level'), adminTokenPath }, 'coordinator listening')
  let closing: Promise<void> | undefined
  return {
    url,
    port,
    services,
    server,
    close: async () => {
      closing ??= (async () => {
        server.closeAllConnections()
        await new Promise<void>(resolve => { server.close(() => { resolve() }) })
        await services.close()
        await rm(endpointPath, { force: true })
      })()
      await closing
    }
  }
}
