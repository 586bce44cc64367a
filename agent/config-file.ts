import { readFile } from 'node:fs/promises'
import { parse } from 'yaml'
import { z } from 'zod'
import { splitRunArgs } from '../protocol/index.js'
import { parseMetricsListen } from './metrics-listen.js'

/** The default config file of the packaged agent. */
export const DEFAULT_AGENT_CONFIG_PATH = '/etc/meshdeploy/agent.yaml'

/** The agent's config file is small; anything larger is not one. */
const MAX_CONFIG_BYTES = 256 * 1024

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

const text = z.string().trim().min(1).max(4096)
const names = z.array(z.string().trim().min(1).max(200)).max(100)
const count = z.number().int().min(1)

/**
 * The agent's YAML config file (`/etc/meshdeploy/agent.yaml` as the agent
 * packages install it): the options of `meshdeploy agent start`, named by
 * their long option in camelCase. Options given on the command line or in
 * the environment win over the file.
 */
export const agentConfigSchema = z.object({
  /** Data folder: identity, task state, chunk cache. */
  data: text.optional(),
  /** Coordinator URL, needed for the first start (enrollment). */
  coordinator: z.url().optional(),
  /** Enrollment token for the first start; ignored once the device is enrolled. */
  enrollToken: text.optional(),
  site: z.string().trim().min(1).max(100).optional(),
  groups: names.optional(),
  hostname: z.string().trim().min(1).max(255).optional(),
  installRoot: text.optional(),
  packageRoot: text.optional(),
  downloadConcurrency: count.max(256).optional(),
  p2p: z.boolean().optional(),
  listen: names.optional(),
  announce: names.optional(),
  mdns: z.boolean().optional(),
  peerList: z.boolean().optional(),
  statusGossip: z.boolean().optional(),
  uploadKbps: count.optional(),
  maxPeers: count.max(1024).optional(),
  swarmKey: text.optional(),
  cacheMaxMb: count.optional(),
  siteCache: z.boolean().optional(),
  /** HOST:PORT or PORT. */
  metricsListen: z.union([z.string().trim().min(1).max(300), z.number().int().min(1).max(65535)]).optional(),
  clockSkewSeconds: count.max(3600).optional(),
  vpnInterfaces: names.optional(),
  vpnCheckSeconds: count.optional(),
  /** A command line, or its words. */
  rebootCommand: z.union([text, z.array(text).min(1).max(100)]).optional(),
  retrySoonSeconds: count.optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  /** CA certificate file (PEM) the coordinator's certificate must chain to. */
  ca: text.optional(),
  /** SHA-256 fingerprint of the coordinator's certificate. */
  pinSha256: text.optional(),
  insecureHttp: z.boolean().optional(),
  /** `root` or `UID[:GID]`: the user installers, detection and reboot commands are started as. */
  runInstallersAs: z.union([text, z.number().int().min(0)]).optional()
}).strict()

export type AgentConfig = z.infer<typeof agentConfigSchema>

/** A config file that cannot be read or says something the agent does not accept; the agent does not start. */
export class AgentConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'AgentConfigError'
  }
}

/** The user child processes run as. */
export interface ProcessCredentials {
  uid: number
  gid: number
}

/** `root`, `UID` or `UID:GID` (the group defaults to the user id). */
export function parseRunAs (value: string | number): ProcessCredentials {
  const textValue = String(value).trim()
  if (textValue === 'root') return { uid: 0, gid: 0 }
  const match = /^(\d{1,10})(?::(\d{1,10}))?$/.exec(textValue)
  if (match === null) throw new AgentConfigError(`${textValue} is neither root nor UID[:GID]`)
  const uid = Number(match[1])
  return { uid, gid: match[2] !== undefined ? Number(match[2]) : uid }
}

/**
 * Decodes the text of a config file. Keys left empty (`enrollToken:`) count
 * as absent, so a template can list every setting.
 */
export function parseAgentConfig (textValue: string, path = 'the agent config'): AgentConfig {
  let decoded: unknown
  try {
    decoded = parse(textValue, { maxAliasCount: 10 }) ?? {}
  } catch (error) {
    throw new AgentConfigError(`${path} is not valid YAML: ${(error as Error).message}`)
  }
  if (typeof decoded !== 'object' || Array.isArray(decoded)) throw new AgentConfigError(`${path} must be a YAML mapping of settings`)
  const present = Object.fromEntries(Object.entries(decoded as Record<string, unknown>).filter(([, value]) => value !== null && value !== ''))
  const parsed = agentConfigSchema.safeParse(present)
  if (!parsed.success) throw new AgentConfigError(`${path}: ${z.prettifyError(parsed.error)}`)
  return parsed.data
}

export async function readAgentConfig (path: string): Promise<AgentConfig> {
  let content: Buffer
  try {
    content = await readFile(path)
  } catch (error) {
    throw new AgentConfigError(`cannot read ${path}: ${(error as Error).message}`)
  }
  if (content.byteLength > MAX_CONFIG_BYTES) throw new AgentConfigError(`${path} is larger than ${MAX_CONFIG_BYTES} bytes`)
  return parseAgentConfig(content.toString('utf8'), path)
}

/**
 * The config's settings as the options of `agent start` hold them after
 * their parsers ran (a reboot command split into words, a metrics address
 * decoded), keyed by option name.
 */
export function optionValuesOf (config: AgentConfig): Record<string, unknown> {
  const values: Record<string, unknown> = { ...config }
  try {
    if (config.metricsListen !== undefined) values.metricsListen = parseMetricsListen(String(config.metricsListen))
  } catch (error) {
    throw new AgentConfigError(`metricsListen: ${(error as Error).message}`)
  }
  if (typeof config.rebootCommand === 'string') values.rebootCommand = splitRunArgs(config.rebootCommand)
  if (config.runInstallersAs !== undefined) values.runInstallersAs = parseRunAs(config.runInstallersAs)
  return values
}
