import { readFileSync } from 'node:fs'
import type { Command } from 'commander'
import { InsecureTransportError, normalizeFingerprint, type TlsTrust } from '../../protocol/index.js'
import { ApiClient, ApiRequestError } from './api-client.js'
import { loadCliConfig } from './config.js'
import { printable } from './format.js'

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
  ca?: string
  pinSha256?: string
  insecureHttp?: boolean
}

/** Adds the options every API command takes. */
export function withApiOptions (command: Command): Command {
  return command
    .option('--url <url>', 'coordinator URL (env MESHDEPLOY_URL, or url: in the config file)')
    .option('--token <token>', 'operator token (env MESHDEPLOY_TOKEN, or token: in the config file)')
    .option('--ca <file>', 'trust the coordinator\'s certificate if it chains to this CA, PEM (env MESHDEPLOY_CA, or ca: in the config file)')
    .option('--pin-sha256 <hex>', 'trust only the coordinator certificate with this SHA-256 fingerprint (env MESHDEPLOY_PIN_SHA256, or pinSha256:)')
    .option('--insecure-http', 'allow a plain http:// URL to another machine (env MESHDEPLOY_INSECURE_HTTP=1, or insecureHttp: true)')
    .option('--json', 'print JSON instead of a table')
}

/** An environment variable, with an empty value read as unset. */
export function environment (name: string): string | undefined {
  const value = process.env[name]
  return value === undefined || value === '' ? undefined : value
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]'])

/**
 * The API client for a command. Settings by precedence: command-line
 * options, then environment, then the config file, then defaults. Plain HTTP
 * is accepted to this machine only, unless asked for: an operator token
 * would otherwise cross the network in clear text.
 */
/** `raw`: answers keep their strings as sent even without --json (a document printed as JSON). */
export function clientFrom (options: GlobalOptions, how: { raw?: boolean } = {}): ApiClient {
  let config
  try {
    config = loadCliConfig()
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const url = options.url ?? process.env.MESHDEPLOY_URL ?? config.url ?? DEFAULT_URL
  const token = options.token ?? process.env.MESHDEPLOY_TOKEN ?? config.token
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new UsageError(`${url} is not a URL`)
  }
  const insecureAllowed = options.insecureHttp === true || process.env.MESHDEPLOY_INSECURE_HTTP === '1' || config.insecureHttp === true
  if (parsed.protocol === 'http:' && !insecureAllowed && !LOOPBACK_HOSTS.has(parsed.hostname)) {
    throw new UsageError(new InsecureTransportError(url, '--insecure-http').message)
  }
  const tls: TlsTrust = {}
  const caFile = options.ca ?? environment('MESHDEPLOY_CA') ?? config.ca
  const pin = options.pinSha256 ?? environment('MESHDEPLOY_PIN_SHA256') ?? config.pinSha256
  try {
    if (caFile !== undefined) tls.caPem = readFileSync(caFile, 'utf8')
    if (pin !== undefined) tls.pinSha256 = normalizeFingerprint(pin)
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  // Answers printed as text show device and operator strings escaped; --json output and raw documents keep them as sent (JSON escapes them itself).
  const shown = options.json !== true && how.raw !== true ? { shownText: (text: string) => printable(text) } : {}
  return new ApiClient({ url, tls, ...(token !== undefined ? { token } : {}), ...shown })
}

/** Prints lines of text; control characters in them are shown escaped (line breaks aside). */
export function print (text: string): void {
  const shown = printable(text, '\n')
  process.stdout.write(shown.endsWith('\n') ? shown : shown + '\n')
}

/** JSON escapes C0 control characters itself; the rest a terminal might act on are written as \u escapes, which parse back the same. */
// eslint-disable-next-line no-control-regex
const JSON_UNSAFE = /[\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

export function printJson (value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2).replace(JSON_UNSAFE, character => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n')
}

/** Runs a command body, turning errors into a message on stderr and an exit code. */
export async function run (body: () => Promise<number | void>): Promise<void> {
  try {
    const code = await body()
    if (typeof code === 'number') process.exitCode = code
  } catch (error) {
    if (error instanceof ApiRequestError) {
      process.stderr.write(`error: ${printable(error.message)}\n`)
      for (const field of error.problem?.errors ?? []) process.stderr.write(`  ${printable(field.path)}: ${printable(field.message)}\n`)
      process.exitCode = error.status >= 500 ? EXIT.unavailable : EXIT.refused
    } else if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message}\n`)
      process.exitCode = EXIT.usage
    } else {
      process.stderr.write(`error: ${printable((error as Error).message)}\n`)
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
