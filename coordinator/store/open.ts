import { join } from 'node:path'
import type { Logger } from '../../protocol/logger.js'
import { LevelStore } from './level-store.js'
import { PostgresStore, isPostgresUrl, redactStoreUrl } from './postgres-store.js'
import type { Store } from './types.js'

/** The store a coordinator uses when it is not told: level in its data folder. */
export const DEFAULT_STORE = 'level'

/** A store address that is neither `level` nor a PostgreSQL URL. */
export class StoreAddressError extends Error {
  constructor (value: string) {
    super(`the store is "level" or a PostgreSQL address (postgres://USER@HOST:PORT/DB), not ${isPostgresUrl(value) ? redactStoreUrl(value) : JSON.stringify(value.slice(0, 40))}`)
    this.name = 'StoreAddressError'
  }
}

/** Checks a store address at the command line, before anything opens. */
export function parseStoreAddress (value: string): string {
  if (value === 'level') return value
  if (!isPostgresUrl(value)) throw new StoreAddressError(value)
  try {
    const url = new URL(value)
    if (url.hostname === '' && !url.searchParams.has('host')) throw new StoreAddressError(value)
  } catch (error) {
    if (error instanceof StoreAddressError) throw error
    throw new StoreAddressError(value)
  }
  return value
}

/** How the store is described in logs and answers: its kind and, for PostgreSQL, the address without a password. */
export function describeStore (value: string): string {
  return value === 'level' ? 'level' : redactStoreUrl(value)
}

/** Opens `level` (in DATA/db) or PostgreSQL (a URL). */
export async function openStore (address: string, dataDir: string, logger: Logger): Promise<Store> {
  parseStoreAddress(address)
  if (address === 'level') return await LevelStore.open(join(dataDir, 'db'))
  const store = await PostgresStore.open(address, {
    onError: error => { logger.warn({ err: { name: error.name, message: error.message }, store: redactStoreUrl(address) }, 'PostgreSQL connection trouble; carrying on') }
  })
  logger.info({ store: redactStoreUrl(address) }, 'using PostgreSQL')
  return store
}
