import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { COLLECTION_NAMES, LevelStore } from './level-store.js'
import { PostgresStore, redactStoreUrl } from './postgres-store.js'
import { shareDataFile } from './shared-files.js'
import type { CollectionName, Store, WriteOperation } from './types.js'

/** Items copied per transaction. */
const BATCH = 1000

export interface MigrationInit {
  /** The level coordinator's data folder (stopped). */
  fromDataDir: string
  /** The PostgreSQL address. */
  to: string
  /** Progress as it goes. */
  onProgress?: (progress: { collection: CollectionName, copied: number }) => void
}

export interface MigrationReport {
  to: string
  collections: Array<{ collection: CollectionName, source: number, target: number, copiedNow: number }>
  counters: { source: number, matching: number }
  /** Every collection and counter holds in PostgreSQL what it holds in level. */
  verified: boolean
}

/** The copy's counts do not match the source's at the end. */
export class MigrationMismatchError extends Error {
  readonly report: MigrationReport
  constructor (report: MigrationReport) {
    super(`the copy differs from the level store: ${report.collections.filter(entry => entry.source !== entry.target).map(entry => `${entry.collection} ${entry.target}/${entry.source}`).join(', ') || `counters ${report.counters.matching}/${report.counters.source}`}`)
    this.name = 'MigrationMismatchError'
    this.report = report
  }
}

/** The database already holds a coordinator's records that no copy put there. */
export class MigrationTargetInUseError extends Error {
  constructor (to: string) {
    super(`${to} already holds a coordinator's records: copy into an empty database`)
    this.name = 'MigrationTargetInUseError'
  }
}

async function countOf (store: Store, collection: CollectionName): Promise<number> {
  let count = 0
  let cursor: string | undefined
  do {
    const page = await store.collections[collection].page({ keysOnly: true, limit: 5000, ...(cursor !== undefined ? { cursor } : {}) })
    count += page.items.length
    cursor = page.cursor
  } while (cursor !== undefined)
  return count
}

/**
 * Copies a level store into PostgreSQL: every collection in key order, a
 * thousand items per transaction, noting where it got to so that an
 * interrupted copy resumes there; items already there are written again
 * with the source's value (idempotent). Counters are brought to the
 * source's values. The signing and credential keys go with it. At the end
 * every collection's count and every counter is compared.
 */
export async function migrateLevelToPostgres (init: MigrationInit): Promise<MigrationReport> {
  const source = await LevelStore.open(join(init.fromDataDir, 'db'))
  let target: PostgresStore | undefined
  try {
    target = await PostgresStore.open(init.to, { listen: false })
    const { rows: [used] } = await target.query<{ items: boolean, marks: boolean }>(`SELECT
      EXISTS (SELECT 1 FROM meshdeploy_items) AS items, EXISTS (SELECT 1 FROM meshdeploy_settings WHERE name LIKE 'migration:%') AS marks`)
    if (used.items && !used.marks) throw new MigrationTargetInUseError(redactStoreUrl(init.to))
    for (const file of ['signing-key.json', 'credential-key']) {
      const path = join(init.fromDataDir, file)
      if (await stat(path).then(() => true, () => false)) await shareDataFile(target, file, path, async () => {})
    }
    const collections: MigrationReport['collections'] = []
    for (const collection of COLLECTION_NAMES) {
      const mark = `migration:${collection}`
      const { rows } = await target.query<{ value: string }>('SELECT value FROM meshdeploy_settings WHERE name = $1', [mark])
      let after = rows[0]?.value
      let copiedNow = 0
      for (;;) {
        const batch: WriteOperation[] = []
        for await (const [key, value] of source.collections[collection].entries({ limit: BATCH, ...(after !== undefined ? { after } : {}) })) {
          batch.push({ type: 'put', collection, key, value } as WriteOperation)
        }
        if (batch.length === 0) break
        await target.write(batch)
        after = (batch[batch.length - 1] as { key: string }).key
        await target.query('INSERT INTO meshdeploy_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value', [mark, after])
        copiedNow += batch.length
        init.onProgress?.({ collection, copied: copiedNow })
        if (batch.length < BATCH) break
      }
      collections.push({ collection, source: await countOf(source, collection), target: await countOf(target, collection), copiedNow })
    }
    // Counters: brought to the source's values by adding the difference, so a second run adds nothing.
    let counterCount = 0
    let matching = 0
    let cursor: string | undefined
    do {
      const page = await source.counters.page({ prefix: '', limit: 5000, ...(cursor !== undefined ? { cursor } : {}) })
      const names = page.items.map(item => item.key)
      const current = await target.counters.getMany(names)
      const additions: WriteOperation[] = []
      for (const [at, item] of page.items.entries()) {
        const delta = item.value - current[at]
        if (delta !== 0) additions.push({ type: 'add', counter: item.key, delta })
      }
      if (additions.length > 0) await target.write(additions)
      const after = await target.counters.getMany(names)
      counterCount += names.length
      matching += page.items.filter((item, at) => after[at] === item.value).length
      cursor = page.cursor
    } while (cursor !== undefined)
    const report: MigrationReport = {
      to: redactStoreUrl(init.to),
      collections,
      counters: { source: counterCount, matching },
      verified: collections.every(entry => entry.source === entry.target) && matching === counterCount
    }
    if (!report.verified) throw new MigrationMismatchError(report)
    return report
  } finally {
    await source.close()
    await target?.close()
  }
}
