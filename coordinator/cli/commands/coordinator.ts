import { Command, Option } from 'commander'
import { z } from 'zod'
import { startCoordinator, DEFAULT_PORT } from '../../main.js'
import { createLogger } from '../../../protocol/logger.js'
import { GIB } from '../../../protocol/index.js'
import { positiveInteger } from '../context.js'
import { readYamlConfig } from '../config.js'
import { parseStoreAddress } from '../../store/open.js'
import { migrateLevelToPostgres } from '../../store/migrate.js'
import type { HttpLimitsInit } from '../../http/request-limits.js'

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

const requestsPerSecond = z.number().int().min(1).max(1_000_000)

/** The coordinator's YAML config file: the same settings as the command-line options. */
export const coordinatorConfigSchema = z.object({
  data: z.string().min(1).optional(),
  store: z.string().min(1).optional(),
  contentDir: z.string().min(1).optional(),
  host: z.string().min(1).optional(),
  port: z.number().int().min(0).max(65535).optional(),
  publicUrl: z.url().optional(),
  maxPackageGib: z.number().positive().optional(),
  chunkSizeKib: z.number().int().min(64).max(16384).optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  operatorRequestsPerSecond: requestsPerSecond.optional(),
  deviceRequestsPerSecond: requestsPerSecond.optional(),
  anonymousRequestsPerSecond: requestsPerSecond.optional(),
  reconnectsPerSecond: requestsPerSecond.optional(),
  agentPackages: z.string().min(1).optional()
}).strict()

type CoordinatorConfig = z.infer<typeof coordinatorConfigSchema>

/** Request-rate limits from the settings; bursts are a multiple of the rate. */
function limitsOf (settings: Record<string, any>): HttpLimitsInit {
  const limits: HttpLimitsInit = {}
  if (settings.operatorRequestsPerSecond !== undefined) limits.operatorRate = { requestsPerSecond: settings.operatorRequestsPerSecond, burst: settings.operatorRequestsPerSecond * 4 }
  if (settings.deviceRequestsPerSecond !== undefined) limits.deviceRate = { requestsPerSecond: settings.deviceRequestsPerSecond, burst: settings.deviceRequestsPerSecond * 2 }
  if (settings.anonymousRequestsPerSecond !== undefined) limits.anonymousRate = { requestsPerSecond: settings.anonymousRequestsPerSecond, burst: settings.anonymousRequestsPerSecond * 5 }
  return limits
}

export function coordinatorCommand (): Command {
  const coordinator = new Command('coordinator').description('run the coordinator')
  coordinator.command('start')
    .description('serve the API, the chunk origin and the console from a data folder')
    .option('--config <file>', 'YAML file with any of the settings below (data, store, contentDir, host, port, publicUrl, maxPackageGib, chunkSizeKib, logLevel, tlsCert, tlsKey, operatorRequestsPerSecond, …); options given here or in the environment win')
    .option('--data <dir>', 'data folder: database, chunks, signing key, admin token')
    .addOption(new Option('--store <address>', 'where the coordinator keeps its records: level (in the data folder) or postgres://USER@HOST:PORT/DB, shared by several coordinators (the password may come from PGPASSWORD or ~/.pgpass)').env('MESHDEPLOY_STORE').default('level'))
    .option('--content-dir <dir>', 'where chunks are kept (default DATA/content); coordinators of one database may share one folder')
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', value => value === '0' ? 0 : positiveInteger(value), DEFAULT_PORT)
    .option('--public-url <url>', 'URL agents use to reach this coordinator')
    .option('--max-package-gib <n>', 'largest package accepted, GiB', Number, 8)
    .option('--chunk-size-kib <n>', 'chunk size of new packages, KiB (64 to 16384)', positiveInteger, 1024)
    .addOption(new Option('--tls-cert <file>', 'PEM certificate (chain): serve HTTPS').env('MESHDEPLOY_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'PEM private key of the certificate').env('MESHDEPLOY_TLS_KEY'))
    .option('--operator-requests-per-second <n>', 'request rate allowed per operator token (default 50, bursts of 4×)', positiveInteger)
    .option('--device-requests-per-second <n>', 'request rate allowed per device, chunk fetches included (default 1000, bursts of 2×)', positiveInteger)
    .option('--anonymous-requests-per-second <n>', 'request rate allowed per address without credentials, failed authentications included (default 10, bursts of 5×)', positiveInteger)
    .option('--reconnects-per-second <n>', 'rate the agents\' return after a restart is spread to: agents spread it over fleet ÷ n seconds, at most a poll interval (default 1000)', positiveInteger)
    .option('--agent-packages <dir>', 'where push installs find the agent packages (default: dist-packages/ of this checkout, as npm run package:agent writes it)')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .addHelpText('after', '\nExamples:\n  meshdeploy coordinator start --data /var/lib/meshdeploy-coordinator --host 0.0.0.0 --port 8650 \\\n    --tls-cert /etc/meshdeploy/cert.pem --tls-key /etc/meshdeploy/key.pem\n  meshdeploy coordinator start --config /etc/meshdeploy/coordinator.yaml\n  meshdeploy coordinator start --data /var/lib/meshdeploy-a --store postgres://meshdeploy@db.internal:5432/meshdeploy \\\n    --content-dir /srv/meshdeploy-content')
    .action(async (options, command: Command) => {
      let settings: Record<string, any> = { ...options }
      if (options.config !== undefined) {
        let file: CoordinatorConfig
        try {
          file = readYamlConfig(options.config, coordinatorConfigSchema, false)
        } catch (error) {
          process.stderr.write(`meshdeploy coordinator: ${(error as Error).message}\n`)
          process.exitCode = 2
          return
        }
        settings = { ...options }
        for (const [key, value] of Object.entries(file)) {
          const source = command.getOptionValueSource(key)
          if (source !== 'cli' && source !== 'env') settings[key] = value
        }
      }
      if (settings.data === undefined) {
        process.stderr.write('meshdeploy coordinator: a data folder is needed (--data or data: in the config file)\n')
        process.exitCode = 2
        return
      }
      if ((settings.tlsCert === undefined) !== (settings.tlsKey === undefined)) {
        process.stderr.write('meshdeploy coordinator: a TLS certificate and its key go together (--tls-cert and --tls-key)\n')
        process.exitCode = 2
        return
      }
      try {
        parseStoreAddress(settings.store)
      } catch (error) {
        process.stderr.write(`meshdeploy coordinator: ${(error as Error).message}\n`)
        process.exitCode = 2
        return
      }
      const logger = createLogger(settings.logLevel, 'coordinator')
      const running = await startCoordinator({
        dataDir: settings.data,
        store: settings.store,
        ...(settings.contentDir !== undefined ? { contentDir: settings.contentDir } : {}),
        host: settings.host,
        port: settings.port,
        maxPackageBytes: Math.round(settings.maxPackageGib * GIB),
        chunkSizeBytes: settings.chunkSizeKib * 1024,
        limits: limitsOf(settings),
        logger,
        ...(settings.tlsCert !== undefined ? { tlsCertPath: settings.tlsCert, tlsKeyPath: settings.tlsKey } : {}),
        ...(settings.publicUrl !== undefined ? { publicUrl: settings.publicUrl } : {}),
        ...(settings.agentPackages !== undefined ? { agentPackagesDir: settings.agentPackages } : {}),
        ...(settings.reconnectsPerSecond !== undefined ? { reconnectsPerSecond: settings.reconnectsPerSecond } : {})
      })
      process.stdout.write(JSON.stringify({ event: 'coordinator-started', url: running.url, adminTokenPath: `${settings.data}/admin-token` }) + '\n')
      await new Promise<void>(resolve => {
        process.once('SIGINT', () => { resolve() })
        process.once('SIGTERM', () => { resolve() })
      })
      await running.close()
      logger.flush()
    })
  coordinator.command('migrate')
    .description('copy a stopped level coordinator\'s records into PostgreSQL (resumable, idempotent, counts verified at the end)')
    .requiredOption('--from-data <dir>', 'the level coordinator\'s data folder (stop the coordinator first)')
    .requiredOption('--to <address>', 'postgres://USER@HOST:PORT/DB, empty or holding an earlier copy')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', '\nAfterwards start the coordinators with --store <address> and --content-dir <the old data folder>/content (or a copy of it).\n\nExample:\n  meshdeploy coordinator migrate --from-data /var/lib/meshdeploy-coordinator --to postgres://meshdeploy@db.internal:5432/meshdeploy')
    .action(async (options: { fromData: string, to: string, json?: boolean }) => {
      try {
        parseStoreAddress(options.to)
        if (options.to === 'level') throw new Error('--to takes a PostgreSQL address')
        const report = await migrateLevelToPostgres({
          fromDataDir: options.fromData,
          to: options.to,
          onProgress: ({ collection, copied }) => { if (options.json !== true) process.stderr.write(`\r${collection}: ${copied} copied`) }
        })
        if (options.json === true) process.stdout.write(JSON.stringify(report) + '\n')
        else {
          process.stderr.write('\n')
          for (const entry of report.collections) if (entry.source > 0) process.stdout.write(`${entry.collection.padEnd(20)} ${String(entry.target).padStart(10)} of ${entry.source}${entry.copiedNow !== entry.source ? ` (${entry.copiedNow} copied now)` : ''}\n`)
          process.stdout.write(`counters             ${String(report.counters.matching).padStart(10)} of ${report.counters.source}\nverified: ${report.to} holds what the level store holds\n`)
        }
      } catch (error) {
        const report = (error as { report?: unknown }).report
        if (options.json === true && report !== undefined) process.stdout.write(JSON.stringify(report) + '\n')
        process.stderr.write(`meshdeploy coordinator migrate: ${(error as Error).message}\n`)
        process.exitCode = 1
      }
    })
  return coordinator
}
