import { Command, Option } from 'commander'
import { z } from 'zod'
import { startCoordinator, DEFAULT_PORT } from '../../main.js'
import { createLogger } from '../../../protocol/logger.js'
import { GIB } from '../../../protocol/index.js'
import { positiveInteger } from '../context.js'
import { readYamlConfig } from '../config.js'
import type { HttpLimitsInit } from '../../http/request-limits.js'

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

const requestsPerSecond = z.number().int().min(1).max(1_000_000)

/** The coordinator's YAML config file: the same settings as the command-line options. */
export const coordinatorConfigSchema = z.object({
  data: z.string().min(1).optional(),
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
  anonymousRequestsPerSecond: requestsPerSecond.optional()
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
    .option('--config <file>', 'YAML file with any of the settings below (data, host, port, publicUrl, maxPackageGib, chunkSizeKib, logLevel, tlsCert, tlsKey, operatorRequestsPerSecond, …); options given here or in the environment win')
    .option('--data <dir>', 'data folder: database, chunks, signing key, admin token')
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
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .addHelpText('after', '\nExamples:\n  meshdeploy coordinator start --data /var/lib/meshdeploy-coordinator --host 0.0.0.0 --port 8650 \\\n    --tls-cert /etc/meshdeploy/cert.pem --tls-key /etc/meshdeploy/key.pem\n  meshdeploy coordinator start --config /etc/meshdeploy/coordinator.yaml')
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
      const logger = createLogger(settings.logLevel, 'coordinator')
      const running = await startCoordinator({
        dataDir: settings.data,
        host: settings.host,
        port: settings.port,
        maxPackageBytes: Math.round(settings.maxPackageGib * GIB),
        chunkSizeBytes: settings.chunkSizeKib * 1024,
        limits: limitsOf(settings),
        logger,
        ...(settings.tlsCert !== undefined ? { tlsCertPath: settings.tlsCert, tlsKeyPath: settings.tlsKey } : {}),
        ...(settings.publicUrl !== undefined ? { publicUrl: settings.publicUrl } : {})
      })
      process.stdout.write(JSON.stringify({ event: 'coordinator-started', url: running.url, adminTokenPath: `${settings.data}/admin-token` }) + '\n')
      await new Promise<void>(resolve => {
        process.once('SIGINT', () => { resolve() })
        process.once('SIGTERM', () => { resolve() })
      })
      await running.close()
      logger.flush()
    })
  return coordinator
}
