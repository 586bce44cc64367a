import { Command, Option } from 'commander'
import { startCoordinator, DEFAULT_PORT } from '../../main.js'
import { createLogger } from '../../../protocol/logger.js'
import { GIB } from '../../../protocol/index.js'
import { positiveInteger } from '../context.js'
import type { HttpLimitsInit } from '../../http/request-limits.js'

export function coordinatorCommand (): Command {
  const coordinator = new Command('coordinator').description('run the coordinator')
  coordinator.command('start')
    .description('serve the API, the chunk origin and the console from a data folder')
    .requiredOption('--data <dir>', 'data folder: database, chunks, signing key, admin token')
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', value => value === '0' ? 0 : positiveInteger(value), DEFAULT_PORT)
    .option('--public-url <url>', 'URL agents use to reach this coordinator')
    .option('--max-package-gib <n>', 'largest package accepted, GiB', Number, 8)
    .option('--chunk-size-kib <n>', 'chunk size of new packages, KiB (64 to 16384)', positiveInteger, 1024)
    .option('--tls-cert <file>', 'PEM certificate (chain): serve HTTPS (env MESHDEPLOY_TLS_CERT)', process.env.MESHDEPLOY_TLS_CERT)
    .option('--tls-key <file>', 'PEM private key of the certificate (env MESHDEPLOY_TLS_KEY)', process.env.MESHDEPLOY_TLS_KEY)
    .option('--operator-requests-per-second <n>', 'request rate allowed per operator token (default 50, bursts of 4×)', positiveInteger)
    .option('--device-requests-per-second <n>', 'request rate allowed per device, chunk fetches included (default 1000, bursts of 2×)', positiveInteger)
    .option('--anonymous-requests-per-second <n>', 'request rate allowed per address without credentials, failed authentications included (default 10, bursts of 5×)', positiveInteger)
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addHelpText('after', '\nExample:\n  meshdeploy coordinator start --data /var/lib/meshdeploy-coordinator --host 0.0.0.0 --port 8650 \\\n    --tls-cert /etc/meshdeploy/cert.pem --tls-key /etc/meshdeploy/key.pem')
    .action(async options => {
      const logger = createLogger(options.logLevel, 'coordinator')
      if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) {
        process.stderr.write('meshdeploy coordinator: --tls-cert and --tls-key go together\n')
        process.exitCode = 2
        return
      }
      const limits: HttpLimitsInit = {}
      if (options.operatorRequestsPerSecond !== undefined) limits.operatorRate = { requestsPerSecond: options.operatorRequestsPerSecond, burst: options.operatorRequestsPerSecond * 4 }
      if (options.deviceRequestsPerSecond !== undefined) limits.deviceRate = { requestsPerSecond: options.deviceRequestsPerSecond, burst: options.deviceRequestsPerSecond * 2 }
      if (options.anonymousRequestsPerSecond !== undefined) limits.anonymousRate = { requestsPerSecond: options.anonymousRequestsPerSecond, burst: options.anonymousRequestsPerSecond * 5 }
      const running = await startCoordinator({
        limits,
        ...(options.tlsCert !== undefined ? { tlsCertPath: options.tlsCert, tlsKeyPath: options.tlsKey } : {}),
        dataDir: options.data,
        host: options.host,
        port: options.port,
        maxPackageBytes: Math.round(options.maxPackageGib * GIB),
        chunkSizeBytes: options.chunkSizeKib * 1024,
        logger,
        ...(options.publicUrl !== undefined ? { publicUrl: options.publicUrl } : {})
      })
      process.stdout.write(JSON.stringify({ event: 'coordinator-started', url: running.url, adminTokenPath: `${options.data}/admin-token` }) + '\n')
      await new Promise<void>(resolve => {
        process.once('SIGINT', () => { resolve() })
        process.once('SIGTERM', () => { resolve() })
      })
      await running.close()
      logger.flush()
    })
  return coordinator
}
