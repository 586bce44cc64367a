import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'yaml'
import { z } from 'zod'

/** The operator's CLI settings file. */
export const cliConfigSchema = z.object({
  /** Coordinator URL. */
  url: z.url().optional(),
  /** Operator token. Keep the file readable by its owner only. */
  token: z.string().min(1).optional(),
  /** CA certificate file (PEM) the coordinator's HTTPS certificate must chain to. */
  ca: z.string().min(1).optional(),
  /** SHA-256 fingerprint of the coordinator's certificate. */
  pinSha256: z.string().min(1).optional(),
  /** Allow a plain http:// URL to another machine. */
  insecureHttp: z.boolean().optional()
}).strict()

export type CliConfig = z.infer<typeof cliConfigSchema>

/** `$MESHDEPLOY_CONFIG`, else `$XDG_CONFIG_HOME/meshdeploy/config.yaml`, else `~/.config/meshdeploy/config.yaml`. */
export function cliConfigPath (env: NodeJS.ProcessEnv = process.env): string {
  if (env.MESHDEPLOY_CONFIG !== undefined && env.MESHDEPLOY_CONFIG !== '') return env.MESHDEPLOY_CONFIG
  const base = env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== '' ? env.XDG_CONFIG_HOME : join(homedir(), '.config')
  return join(base, 'meshdeploy', 'config.yaml')
}

/** Reads a YAML settings file against a schema; a missing file is an empty one, a wrong one a clear error. */
export function readYamlConfig<T extends z.ZodType> (path: string, schema: T, optional: boolean): z.infer<T> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    if (optional && (error as NodeJS.ErrnoException).code === 'ENOENT') return schema.parse({})
    throw new Error(`cannot read ${path}: ${(error as Error).message}`)
  }
  let decoded: unknown
  try {
    decoded = parse(text) ?? {}
  } catch (error) {
    throw new Error(`${path} is not valid YAML: ${(error as Error).message}`)
  }
  const parsed = schema.safeParse(decoded)
  if (!parsed.success) throw new Error(`${path}: ${z.prettifyError(parsed.error)}`)
  return parsed.data
}

export function loadCliConfig (env: NodeJS.ProcessEnv = process.env): CliConfig {
  return readYamlConfig(cliConfigPath(env), cliConfigSchema, true)
}
