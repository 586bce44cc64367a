import { readFile, writeFile, rename, chmod } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { PostgresStore } from './postgres-store.js'

/** The data folder's copy of a shared file differs from the one the other coordinators use. */
export class SharedFileConflictError extends Error {
  constructor (name: string, path: string) {
    super(`${path} differs from the ${name} the other coordinators of this database use: move it away to take theirs`)
    this.name = 'SharedFileConflictError'
  }
}

async function readIfPresent (path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

async function writePrivate (path: string, text: string): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`
  await writeFile(temporary, text, { mode: 0o600 })
  await chmod(temporary, 0o600)
  await rename(temporary, path)
}

/**
 * Coordinators sharing a database share their signing key and credential
 * key: agents pin the one key whichever coordinator answers, and a secret
 * sealed by one opens on another. The first coordinator's file is offered
 * to the database; the others take it into their data folders. A data
 * folder with a different file is refused rather than overwritten.
 *
 * `create` makes the file when neither side has one (the first start).
 */
export async function shareDataFile (store: unknown, name: string, path: string, create: () => Promise<void>): Promise<void> {
  if (!(store instanceof PostgresStore)) return
  const setting = `file:${name}`
  const { rows } = await store.query<{ value: string }>('SELECT value FROM meshdeploy_settings WHERE name = $1', [setting])
  let shared = rows[0]?.value
  let local = await readIfPresent(path)
  if (shared === undefined) {
    if (local === undefined) {
      await create()
      local = (await readIfPresent(path))!
    }
    // Two first starts at once: one offer wins, the other takes it.
    await store.query('INSERT INTO meshdeploy_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [setting, local])
    shared = (await store.query<{ value: string }>('SELECT value FROM meshdeploy_settings WHERE name = $1', [setting])).rows[0].value
    if (shared !== local) await writePrivate(path, shared)
    return
  }
  if (local === undefined) {
    await writePrivate(path, shared)
    return
  }
  if (local !== shared) throw new SharedFileConflictError(name, path)
}

/** Offers a shared file's new content (after a key rotation) to the other coordinators. */
export async function updateSharedFile (store: unknown, name: string, path: string): Promise<void> {
  if (!(store instanceof PostgresStore)) return
  const text = await readFile(path, 'utf8')
  await store.query('INSERT INTO meshdeploy_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value', [`file:${name}`, text])
}
