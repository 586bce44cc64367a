import '../protocol/polyfill.js'
import { createServer, type Server } from 'node:http'
import { chmod, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { createApp } from './http/app.js'
import { openServices, type Services } from './services.js'
import { createLogger, type Logger, type LogLevel } from '../protocol/logger.js'

export interface CoordinatorInit {
  dataDir: string
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
  /** The clock; tests move it to reach a task's start or expiry. @default Date.now */
  now?: () => number
}

export const DEFAULT_PORT = 8650

export interface RunningCoordinator {
  url: string
  port: number
  services: Services
  server: Server
  close: () => Promise<void>
}

/** Opens the coordinator's data folder and serves its API. */
export async function startCoordinator (init: CoordinatorInit): Promise<RunningCoordinator> {
  const logger = init.logger ?? createLogger(init.logLevel ?? 'info', 'coordinator')
  const services = await openServices({
    dataDir: init.dataDir,
    logger,
    ...(init.maxPackageBytes !== undefined ? { maxPackageBytes: init.maxPackageBytes } : {}),
    ...(init.chunkSizeBytes !== undefined ? { chunkSizeBytes: init.chunkSizeBytes } : {}),
    ...(init.now !== undefined ? { now: init.now } : {})
  })
  const adminTokenPath = join(init.dataDir, 'admin-token')
  if (services.bootstrapAdminToken !== undefined) {
    await writeFile(adminTokenPath, services.bootstrapAdminToken + '\n', { mode: 0o600 })
    await chmod(adminTokenPath, 0o600)
    logger.info({ path: adminTokenPath }, 'created the first admin token')
  }
  const app = createApp(services)
  const server = createServer({ requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: 65_000 }, app.callback())
  // Uploads of several GiB and held-open assignment requests outlive the default timeouts;
  // an idle socket still ends after two minutes.
  server.setTimeout(120_000)
  const host = init.host ?? '127.0.0.1'
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(init.port ?? DEFAULT_PORT, host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  const url = init.publicUrl ?? `http://${host.includes(':') ? `[${host}]` : host}:${port}`
  const endpointPath = join(init.dataDir, 'endpoint.json')
  await writeFile(endpointPath, JSON.stringify({ url, pid: process.pid, adminTokenPath }) + '\n', { mode: 0o600 })
  logger.info({ url, dataDir: init.dataDir, adminTokenPath }, 'coordinator listening')
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
