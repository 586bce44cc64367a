import type { Command } from 'commander'
import { ApiClient, ApiRequestError } from './api-client.js'
import { loadCliConfig } from './config.js'

/** Exit codes scripts can rely on. */
export const EXIT = {
  ok: 0,
  /** The watched task ended with failed devices. */
  taskFailed: 1,
  /** Wrong usage or invalid input. */
  usage: 2,
  /** The API refused the request (4xx). */
  refused: 3,
  /** The coordinator could not be reached or failed (5xx). */
  unavailable: 4
} as const

export const DEFAULT_URL = 'http://127.0.0.1:8650'

export interface GlobalOptions {
  url?: string
  token?: string
  json?: boolean
}

/** Adds the options every API command takes. */
export function withApiOptions (command: Command): Command {
  return command
    .option('--url <url>', 'coordinator URL (env MESHDEPLOY_URL, or url: in the config file)')
    .option('--token <token>', 'operator token (env MESHDEPLOY_TOKEN, or token: in the config file)')
    .option('--json', 'print JSON instead of a table')
}

/** Settings by precedence: command-line options, then environment, then the config file, then defaults. */
export function clientFrom (options: GlobalOptions): ApiClient {
  let config
  try {
    config = loadCliConfig()
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const url = options.url ?? process.env.MESHDEPLOY_URL ?? config.url ?? DEFAULT_URL
  const token = options.token ?? process.env.MESHDEPLOY_TOKEN ?? config.token
  return new ApiClient({ url, ...(token !== undefined ? { token } : {}) })
}

export function print (text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n')
}

export function printJson (value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n')
}

/** Runs a command body, turning errors into a message on stderr and an exit code. */
export async function run (body: () => Promise<number | void>): Promise<void> {
  try {
    const code = await body()
    if (typeof code === 'number') process.exitCode = code
  } catch (error) {
    if (error instanceof ApiRequestError) {
      process.stderr.write(`error: ${error.message}\n`)
      for (const field of error.problem?.errors ?? []) process.stderr.write(`  ${field.path}: ${field.message}\n`)
      process.exitCode = error.status >= 500 ? EXIT.unavailable : EXIT.refused
    } else if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message}\n`)
      process.exitCode = EXIT.usage
    } else {
      process.stderr.write(`error: ${(error as Error).message}\n`)
      process.exitCode = EXIT.unavailable
    }
  }
}

export class UsageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

export function list (value: string): string[] {
  return value.split(',').map(item => item.trim()).filter(item => item !== '')
}

export function positiveInteger (value: string): number {
  const number = Number(value)
  if (!Number.isInteger(number) || number < 1) throw new UsageError(`${value} is not a positive whole number`)
  return number
}
