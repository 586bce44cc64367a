import { randomBytes } from 'node:crypto'

/** A random identifier with a readable prefix, e.g. `task-3f9a0c1b7d2e4a65`. */
export function randomId (prefix: string, bytes = 8): string {
  return `${prefix}-${randomBytes(bytes).toString('hex')}`
}

/** A random secret for credentials and tokens, with a prefix that says what it is. */
export function randomSecret (prefix: string): string {
  return `${prefix}_${randomBytes(24).toString('base64url')}`
}

/**
 * The header an agent names its session with on every request to the
 * coordinator (one random id per running agent), so that two agents running
 * with one credential (a copied agent.json) can be told apart.
 */
export const AGENT_SESSION_HEADER = 'meshdeploy-session'
