import { Command, Option } from 'commander'
import { z } from 'zod'
import { startCoordinator, DEFAULT_PORT } from '../../main.js'
import { createLogger } from '../../../protocol/logger.js'
import { GIB } from '../../../protocol/index.js'
import { positiveInteger } from '../context.js'
import { readYamlConfig } from '../config.js'

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** The coordinator's YAML config file: the same settings as the command-line options. */
export const coordinatorConfigSchema = z.object({
  data: z.string().min(1).optional(),
  host: z.string().min(1).optional(),
  port: z.number().int().min(0).max(65535).optional(),
  publicUrl: z.url().optional(),
  maxPackageGib: z.number().positive().optional(),
  chunkSizeKib: z.number().int().min(64).max(16384).optional(),
  logLevel: z.enum(LOG_LEVELS).optional()
}).strict()

type CoordinatorConfig = z.infer<typeof coordinatorConfigSchema>

export function coordinatorCommand (): Command {
  const coordinator = new Command('coordinator').description('run the coordinator')
  coordinator.command('start')
    .description('serve the API, the chunk origin and the console from a data folder')
    .option('--config <file>', 'YAML file with any of the settings below (data, host, port, publicUrl, maxPackageGib, chunkSizeKib, logLevel); options given here win')
    .option('--data <dir>', 'data folder: database, chunks, signing key, admin token')
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', value => value === '0' ? 0 : positiveInteger(value), DEFAULT_PORT)
    .option('--public-url <url>', 'URL agents use to reach this coordinator')
    .option('--max-package-gib <n>', 'largest package accepted, GiB', Number, 8)
    .option('--chunk-size-kib <n>', 'chunk size of new packages, KiB (64 to 16384)', positiveInteger, 1024)
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
    .addHelpText('after', '\nExamples:\n  meshdeploy coordinator start --data /var/lib/meshdeploy-coordinator --host 0.0.0.0 --port 8650\n  meshdeploy coordinator start --config /etc/meshdeploy/coordinator.yaml')
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
          if (command.getOptionValueSource(key) !== 'cli') settings[key] = value
        }
      }
      if (settings.data === undefined) {
        process.stderr.write('meshdeploy coordinator: a data folder is needed (--data or data: in the config file)\n')
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
        logger,
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
