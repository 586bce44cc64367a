import { createHash, randomUUID } from 'node:crypto'
import pg from 'pg'
import { ANNOUNCED_COLLECTIONS, ChangeFeed, type StoreChange } from './changes.js'
import { decodeCursor, encodeCursor, pageLimit } from './cursors.js'
import { GroupCommit } from './group-commit.js'
import { LOCK_CLASS, migrate } from './postgres-schema.js'
import {
  STORE_INDEXES, UnknownIndexError,
  type Collection, type CollectionName, type Collections, type Counters, type IndexDefinition, type Page, type PageOptions,
  type RangeOptions, type Store, type WriteOperation, type WriteResult
} from './types.js'

/** Connections a coordinator opens at most. @default 10 */
export const DEFAULT_POOL_SIZE = 10
/** Operations merged into one transaction at most; more wait for the next. */
const MAX_OPERATIONS_PER_WRITE = 20_000
/** Rows read per step of a scan. */
const SCAN_PAGE = 1000
/** A NOTIFY payload stays under the server's 8,000 bytes. */
const MAX_NOTIFY_BYTES = 7000
/** The channel coordinators announce changed ids on. */
export const CHANGE_CHANNEL = 'meshdeploy_changes'
/** Times a transaction that lost a deadlock or serialisation race is tried again. */
const MAX_WRITE_ATTEMPTS = 5
/** Waits before the change channel is opened again after it was lost. */
const LISTEN_RETRY_MS = [100, 500, 1000, 2000, 5000]
/** How long a query may run before it is cancelled. @default 30 s */
const DEFAULT_STATEMENT_TIMEOUT_MS = 30_000

export interface PostgresStoreInit {
  /** @default DEFAULT_POOL_SIZE */
  poolSize?: number
  /** Listen for other coordinators' changes (`changes`). @default true */
  listen?: boolean
  /** @default DEFAULT_STATEMENT_TIMEOUT_MS */
  statementTimeoutMs?: number
  /** Called when the change channel is lost or a pooled connection fails; the store carries on. */
  onError?: (error: Error) => void
}

/** The address without its password, for logs and answers. */
export function redactStoreUrl (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return 'postgres://(unparsable address)'
  }
}

/** Whether a store address names PostgreSQL. */
export function isPostgresUrl (value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value)
}

/** The smallest string above every string that starts with `prefix` (key order is code-point order). */
function upperOf (prefix: string): string | undefined {
  const points = [...prefix]
  while (points.length > 0) {
    const last = points.pop()!.codePointAt(0)!
    if (last < 0x10ffff) return points.join('') + String.fromCodePoint(last + 1 === 0xd800 ? 0xe000 : last + 1)
  }
  return undefined
}

/** Index keys `collection, index, term, key` for unnest. */
interface IndexRows { collections: string[], indexes: string[], terms: string[], keys: string[] }

function indexRows (): IndexRows {
  return { collections: [], indexes: [], terms: [], keys: [] }
}

function pushIndexRow (rows: IndexRows, collection: string, index: string, term: string, key: string): void {
  rows.collections.push(collection)
  rows.indexes.push(index)
  rows.terms.push(term)
  rows.keys.push(key)
}

/** The advisory lock that serialises writers of one indexed item across coordinators. */
function itemLock (collection: string, key: string): number {
  return createHash('sha256').update(collection).update('\u0000').update(key).digest().readInt32BE(0)
}

function isRetryable (error: unknown): boolean {
  const code = (error as { code?: string }).code
  return code === '40P01' || code === '40001'
}

type Queryable = pg.Pool | pg.PoolClient

class PostgresCollection<T> implements Collection<T> {
  constructor (private readonly name: CollectionName, private readonly pool: pg.Pool) {}

  async get (key: string): Promise<T | undefined> {
    const { rows } = await this.pool.query<{ value: T }>('SELECT value FROM meshdeploy_items WHERE collection = $1 AND key = $2', [this.name, key])
    return rows[0]?.value
  }

  async getMany (keys: string[]): Promise<Array<T | undefined>> {
    if (keys.length === 0) return []
    const { rows } = await this.pool.query<{ key: string, value: T }>('SELECT key, value FROM meshdeploy_items WHERE collection = $1 AND key = ANY($2::text[])', [this.name, keys])
    const found = new Map(rows.map(row => [row.key, row.value]))
    return keys.map(key => found.get(key))
  }

  async page (options: PageOptions = {}): Promise<Page<T>> {
    const limit = pageLimit(options.limit)
    const keysOnly = options.keysOnly === true
    const prefix = options.prefix ?? ''
    if (options.index === undefined) {
      const listing = `p:${prefix}`
      const after = options.cursor !== undefined ? decodeCursor(options.cursor, listing) : undefined
      const { sql, parameters } = rangeQuery(keysOnly ? 'key' : 'key, value', 'meshdeploy_items', 'collection = $1', [this.name], prefix, after, limit + 1)
      const { rows } = await this.pool.query<{ key: string, value: T }>(sql, parameters)
      return toPage(rows, limit, listing)
    }
    const definitions = STORE_INDEXES[this.name] as Record<string, IndexDefinition<unknown>> | undefined
    if (definitions?.[options.index.name] === undefined) throw new UnknownIndexError(this.name, options.index.name)
    const listing = `i:${options.index.name}:${options.index.term}:${prefix}`
    const after = options.cursor !== undefined ? decodeCursor(options.cursor, listing) : undefined
    const base = [this.name, options.index.name, options.index.term]
    const where = 'e.collection = $1 AND e.index_name = $2 AND e.term = $3'
    const { sql, parameters } = keysOnly
      ? rangeQuery('e.key AS key', 'meshdeploy_index_entries e', where, base, prefix, after, limit + 1, 'e.key')
      // An item deleted between index and item is left out (the same transaction keeps them in step).
      : rangeQuery('e.key AS key, i.value AS value', 'meshdeploy_index_entries e JOIN meshdeploy_items i ON i.collection = e.collection AND i.key = e.key', where, base, prefix, after, limit + 1, 'e.key')
    const { rows } = await this.pool.query<{ key: string, value: T }>(sql, parameters)
    return toPage(rows, limit, listing)
  }

  async count (index: { name: string, term: string }): Promise<number> {
    const definition = STORE_INDEXES[this.name]?.[index.name] as IndexDefinition<unknown> | undefined
    if (definition === undefined) throw new UnknownIndexError(this.name, index.name)
    if (definition.counted !== true) throw new UnknownIndexError(this.name, `${index.name} (counted)`)
    const { rows } = await this.pool.query<{ count: string }>('SELECT count FROM meshdeploy_index_counts WHERE collection = $1 AND index_name = $2 AND term = $3', [this.name, index.name, index.term])
    return rows.length === 0 ? 0 : Number(rows[0].count)
  }

  async * entries (options: RangeOptions = {}): AsyncGenerator<[string, T]> {
    const reverse = options.reverse === true
    const bounds: Array<{ op: string, value: string }> = []
    if (options.prefix !== undefined) {
      bounds.push({ op: '>=', value: options.prefix })
      const upper = upperOf(options.prefix)
      if (upper !== undefined) bounds.push({ op: '<', value: upper })
    }
    if (options.gte !== undefined) bounds.push({ op: '>=', value: options.gte })
    if (options.lt !== undefined) bounds.push({ op: '<', value: options.lt })
    if (options.after !== undefined) bounds.push({ op: reverse ? '<' : '>', value: options.after })
    let remaining = options.limit ?? Number.POSITIVE_INFINITY
    let last: string | undefined
    // Read in steps, so that a long scan holds no cursor open across the caller's awaits.
    for (;;) {
      const parameters: unknown[] = [this.name]
      const conditions = ['collection = $1']
      for (const bound of bounds) {
        parameters.push(bound.value)
        conditions.push(`key ${bound.op} $${parameters.length}`)
      }
      if (last !== undefined) {
        parameters.push(last)
        conditions.push(`key ${reverse ? '<' : '>'} $${parameters.length}`)
      }
      const step = Math.min(SCAN_PAGE, remaining)
      parameters.push(step)
      const { rows } = await this.pool.query<{ key: string, value: T }>(
        `SELECT key, value FROM meshdeploy_items WHERE ${conditions.join(' AND ')} ORDER BY key ${reverse ? 'DESC' : 'ASC'} LIMIT $${parameters.length}`, parameters)
      for (const row of rows) yield [row.key, row.value]
      remaining -= rows.length
      if (rows.length < step || remaining <= 0) return
      last = rows[rows.length - 1].key
    }
  }

  async * values (options: RangeOptions = {}): AsyncGenerator<T> {
    for await (const [, value] of this.entries(options)) yield value
  }
}

/** A page query over one key column: within a prefix, after a key, in key order. */
function rangeQuery (columns: string, from: string, where: string, base: unknown[], prefix: string, after: string | undefined, limit: number, keyColumn = 'key'): { sql: string, parameters: unknown[] } {
  const parameters = [...base]
  const conditions = [where]
  if (prefix !== '') {
    parameters.push(prefix)
    conditions.push(`${keyColumn} >= $${parameters.length}`)
    const upper = upperOf(prefix)
    if (upper !== undefined) {
      parameters.push(upper)
      conditions.push(`${keyColumn} < $${parameters.length}`)
    }
  }
  if (after !== undefined) {
    parameters.push(after)
    conditions.push(`${keyColumn} > $${parameters.length}`)
  }
  parameters.push(limit)
  return { sql: `SELECT ${columns} FROM ${from} WHERE ${conditions.join(' AND ')} ORDER BY ${keyColumn} LIMIT $${parameters.length}`, parameters }
}

function toPage<T> (rows: Array<{ key: string, value: T }>, limit: number, listing: string): Page<T> {
  const more = rows.length > limit
  if (more) rows.length = limit
  const page: Page<T> = { items: rows.map(row => ({ key: row.key, value: row.value })) }
  if (more) page.cursor = encodeCursor(listing, rows[rows.length - 1].key)
  return page
}

class PostgresCounters implements Counters {
  constructor (private readonly pool: pg.Pool) {}

  async get (counter: string): Promise<number> {
    const { rows } = await this.pool.query<{ value: number }>('SELECT value FROM meshdeploy_counters WHERE name = $1', [counter])
    return rows[0]?.value ?? 0
  }

  async getMany (counters: string[]): Promise<number[]> {
    if (counters.length === 0) return []
    const { rows } = await this.pool.query<{ name: string, value: number }>('SELECT name, value FROM meshdeploy_counters WHERE name = ANY($1::text[])', [counters])
    const found = new Map(rows.map(row => [row.name, row.value]))
    return counters.map(name => found.get(name) ?? 0)
  }

  async page (options: { prefix: string, limit?: number, cursor?: string }): Promise<Page<number>> {
    const limit = pageLimit(options.limit)
    const listing = `c:${options.prefix}`
    const after = options.cursor !== undefined ? decodeCursor(options.cursor, listing) : undefined
    const { sql, parameters } = rangeQuery('name AS key, value', 'meshdeploy_counters', 'true', [], options.prefix, after, limit + 1, 'name')
    const { rows } = await this.pool.query<{ key: string, value: number }>(sql, parameters)
    return toPage(rows, limit, listing)
  }
}

interface WriteJob {
  operations: WriteOperation[]
  result: WriteResult
}

/** An item's state at the end of a flush: its value, or deleted. */
type FinalState = { value: unknown } | { deleted: true }

/**
 * The store on PostgreSQL, for several coordinators sharing one database.
 * Items live in one table keyed by (collection, key) in byte order, the
 * declared indexes and their counts beside them, counters in their own
 * table. Each flush of the group commit is one transaction, committed
 * before any caller's write resolves. Writers of one indexed item serialise
 * on an advisory lock, so indexes stay in step across coordinators; counters
 * add in the database, so every coordinator's additions count once. The
 * keys a transaction changed are announced on a channel (ids only) that
 * the other coordinators listen to (`changes`).
 */
export class PostgresStore implements Store {
  readonly collections: Store['collections']
  readonly counters: Counters
  /** What other coordinators change. */
  readonly changes = new ChangeFeed()
  /** This coordinator's name on the change channel: its own announcements are not repeated to it. */
  readonly origin = randomUUID()
  private readonly pool: pg.Pool
  private readonly url: string
  private readonly commits: GroupCommit<WriteJob>
  private readonly onError: (error: Error) => void
  private listener?: pg.Client
  private listening = false
  private closed = false
  private retryTimer?: NodeJS.Timeout

  private constructor (pool: pg.Pool, url: string, init: PostgresStoreInit) {
    this.pool = pool
    this.url = url
    this.onError = init.onError ?? (() => {})
    this.collections = new Proxy({}, {
      get: (cache: Record<string, unknown>, name: string) => (cache[name] ??= new PostgresCollection(name as CollectionName, pool))
    }) as Store['collections']
    this.counters = new PostgresCounters(pool)
    this.commits = new GroupCommit<WriteJob>({
      flush: async jobs => { await this.flush(jobs) },
      weightOf: job => job.operations.length,
      maxWeightPerFlush: MAX_OPERATIONS_PER_WRITE
    })
  }

  /** Connects, brings the schema up to date (refusing a newer one), builds changed indexes and starts listening. */
  static async open (url: string, init: PostgresStoreInit = {}): Promise<PostgresStore> {
    const statementTimeoutMs = init.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS
    const pool = new pg.Pool({
      connectionString: url,
      max: init.poolSize ?? DEFAULT_POOL_SIZE,
      statement_timeout: statementTimeoutMs,
      connectionTimeoutMillis: 10_000,
      application_name: 'meshdeploy-coordinator',
      // What keeps a coordinator's process up is its HTTP server, not idle database connections.
      allowExitOnIdle: true
    })
    // An idle pooled connection that fails is dropped by the pool; a query on it would have failed anyway.
    pool.on('error', error => { init.onError?.(error) })
    const store = new PostgresStore(pool, url, init)
    try {
      const client = await pool.connect()
      try {
        const { rows } = await client.query<{ server_encoding: string }>('SHOW server_encoding')
        if (rows[0].server_encoding !== 'UTF8') throw new Error(`the database's encoding is ${rows[0].server_encoding}; meshdeploy needs UTF8 (createdb -E UTF8)`)
        await migrate(client)
        await store.buildIndexes(client)
      } finally {
        client.release()
      }
      if (init.listen ?? true) await store.listen(url)
    } catch (error) {
      await store.close().catch(() => {})
      throw error
    }
    return store
  }

  /** Lists every indexed item again when the index declaration changed since the indexes were built. */
  private async buildIndexes (client: pg.PoolClient): Promise<void> {
    const declared = JSON.stringify(Object.entries(STORE_INDEXES).map(([collection, indexes]) => [collection, Object.entries(indexes ?? {}).map(([name, definition]) => [name, definition.counted === true])]))
    await client.query('BEGIN')
    try {
      await client.query('SELECT pg_advisory_xact_lock($1, 1)', [LOCK_CLASS.migration])
      const { rows } = await client.query<{ value: string }>("SELECT value FROM meshdeploy_settings WHERE name = 'indexes'")
      if (rows[0]?.value === declared) {
        await client.query('COMMIT')
        return
      }
      await client.query('DELETE FROM meshdeploy_index_entries')
      await client.query('DELETE FROM meshdeploy_index_counts')
      for (const [collection, definitions] of Object.entries(STORE_INDEXES) as Array<[CollectionName, Record<string, IndexDefinition<unknown>>]>) {
        let after = ''
        for (;;) {
          const { rows: items } = await client.query<{ key: string, value: unknown }>(
            'SELECT key, value FROM meshdeploy_items WHERE collection = $1 AND key > $2 ORDER BY key LIMIT $3', [collection, after, SCAN_PAGE])
          if (items.length === 0) break
          const added = indexRows()
          for (const item of items) {
            for (const [name, definition] of Object.entries(definitions)) {
              for (const term of new Set(definition.terms(item.value))) pushIndexRow(added, collection, name, term, item.key)
            }
          }
          await insertIndexRows(client, added)
          after = items[items.length - 1].key
        }
        for (const [name, definition] of Object.entries(definitions)) {
          if (definition.counted !== true) continue
          await client.query(`INSERT INTO meshdeploy_index_counts (collection, index_name, term, count)
            SELECT collection, index_name, term, count(*) FROM meshdeploy_index_entries WHERE collection = $1 AND index_name = $2 GROUP BY collection, index_name, term`, [collection, name])
        }
      }
      await client.query(`INSERT INTO meshdeploy_settings (name, value) VALUES ('indexes', $1) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, [declared])
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    }
  }

  async write (operations: WriteOperation[]): Promise<WriteResult> {
    const job: WriteJob = { operations, result: { counters: new Map() } }
    if (operations.length === 0) return job.result
    await this.commits.commit(job)
    return job.result
  }

  async appendNumbered (counter: string, count: number, build: (first: number) => WriteOperation[]): Promise<number> {
    if (!Number.isInteger(count) || count < 1) throw new RangeError('a count of numbers is a whole number of at least 1')
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect()
      let broken = false
      try {
        await client.query('BEGIN')
        // The counter's row stays locked until this commits: the next writer of this counter waits, so numbers commit in order.
        const { rows } = await client.query<{ value: number }>(`INSERT INTO meshdeploy_counters AS c (name, value) VALUES ($1, $2)
          ON CONFLICT (name) DO UPDATE SET value = c.value + EXCLUDED.value RETURNING value`, [counter, count])
        const first = rows[0].value - count + 1
        const jobDeltas: Array<Map<string, number>> = []
        const finals = finalStates([build(first)], jobDeltas)
        await this.apply(client, finals, jobDeltas)
        await this.announce(client, finals)
        await client.query('COMMIT')
        return first
      } catch (error) {
        await client.query('ROLLBACK').catch(() => { broken = true })
        if (attempt < MAX_WRITE_ATTEMPTS && isRetryable(error)) continue
        throw error
      } finally {
        client.release(broken)
      }
    }
  }

  private async flush (jobs: WriteJob[]): Promise<void> {
    // Encode first: a value that cannot be stored fails its write before the database is asked anything.
    const jobDeltas: Array<Map<string, number>> = []
    const finals = finalStates(jobs.map(job => job.operations), jobDeltas)
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect()
      let broken = false
      try {
        await client.query('BEGIN')
        const counterValues = await this.apply(client, finals, jobDeltas)
        await this.announce(client, finals)
        await client.query('COMMIT')
        // Each caller learns the value its own addition made, in the order the callers came.
        for (const [at, job] of jobs.entries()) {
          for (const [name, delta] of jobDeltas[at]) {
            const value = counterValues.get(name)! + delta
            counterValues.set(name, value)
            job.result.counters.set(name, value)
          }
        }
        return
      } catch (error) {
        await client.query('ROLLBACK').catch(() => { broken = true })
        if (attempt < MAX_WRITE_ATTEMPTS && isRetryable(error)) continue
        throw error
      } finally {
        client.release(broken)
      }
    }
  }

  /** Applies a flush inside its transaction; returns each counter's value before the flush's additions. */
  private async apply (client: pg.PoolClient, finals: Map<CollectionName, Map<string, FinalState>>, jobDeltas: Array<Map<string, number>>): Promise<Map<string, number>> {
    // Writers of the same indexed items take their locks in one order: no deadlock between coordinators.
    const locks: number[] = []
    for (const [collection, states] of finals) {
      if (STORE_INDEXES[collection] === undefined) continue
      for (const key of states.keys()) locks.push(itemLock(collection, key))
    }
    if (locks.length > 0) {
      await client.query('SELECT pg_advisory_xact_lock($1, lock) FROM unnest($2::int[]) AS lock', [LOCK_CLASS.item, [...new Set(locks)].sort((a, b) => a - b)])
    }
    const removed = indexRows()
    const added = indexRows()
    const countDeltas = new Map<string, { collection: string, index: string, term: string, delta: number }>()
    for (const [collection, states] of finals) {
      const definitions = STORE_INDEXES[collection] as Record<string, IndexDefinition<unknown>> | undefined
      const keys = [...states.keys()].sort()
      const before = new Map<string, unknown>()
      if (definitions !== undefined) {
        const { rows } = await client.query<{ key: string, value: unknown }>('SELECT key, value FROM meshdeploy_items WHERE collection = $1 AND key = ANY($2::text[])', [collection, keys])
        for (const row of rows) before.set(row.key, row.value)
      }
      const putKeys: string[] = []
      const putValues: string[] = []
      const deleted: string[] = []
      for (const key of keys) {
        const state = states.get(key)!
        if ('deleted' in state) deleted.push(key)
        else {
          putKeys.push(key)
          putValues.push(state.value as string)
        }
        if (definitions === undefined) continue
        const after = 'deleted' in state ? undefined : JSON.parse(state.value as string) as unknown
        const previous = before.get(key)
        for (const [name, definition] of Object.entries(definitions)) {
          const oldTerms = new Set(previous !== undefined ? definition.terms(previous) : [])
          const newTerms = new Set(after !== undefined ? definition.terms(after) : [])
          const count = (term: string, delta: number): void => {
            if (definition.counted !== true) return
            const id = `${collection}\u0000${name}\u0000${term}`
            const entry = countDeltas.get(id) ?? { collection, index: name, term, delta: 0 }
            entry.delta += delta
            countDeltas.set(id, entry)
          }
          for (const term of oldTerms) {
            if (newTerms.has(term)) continue
            pushIndexRow(removed, collection, name, term, key)
            count(term, -1)
          }
          for (const term of newTerms) {
            if (oldTerms.has(term)) continue
            pushIndexRow(added, collection, name, term, key)
            count(term, 1)
          }
        }
      }
      if (deleted.length > 0) await client.query('DELETE FROM meshdeploy_items WHERE collection = $1 AND key = ANY($2::text[])', [collection, deleted])
      if (putKeys.length > 0) {
        await client.query(`INSERT INTO meshdeploy_items (collection, key, value)
          SELECT $1, item.key, item.value::json FROM unnest($2::text[], $3::text[]) AS item (key, value)
          ON CONFLICT (collection, key) DO UPDATE SET value = EXCLUDED.value`, [collection, putKeys, putValues])
      }
    }
    if (removed.keys.length > 0) {
      await client.query(`DELETE FROM meshdeploy_index_entries e USING unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r (collection, index_name, term, key)
        WHERE e.collection = r.collection AND e.index_name = r.index_name AND e.term = r.term AND e.key = r.key`, [removed.collections, removed.indexes, removed.terms, removed.keys])
    }
    await insertIndexRows(client, added)
    const counts = [...countDeltas.entries()].filter(([, entry]) => entry.delta !== 0).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([, entry]) => entry)
    if (counts.length > 0) {
      const columns = [counts.map(entry => entry.collection), counts.map(entry => entry.index), counts.map(entry => entry.term), counts.map(entry => entry.delta)]
      await client.query(`INSERT INTO meshdeploy_index_counts AS c (collection, index_name, term, count)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
        ON CONFLICT (collection, index_name, term) DO UPDATE SET count = c.count + EXCLUDED.count`, columns)
      await client.query(`DELETE FROM meshdeploy_index_counts c USING unnest($1::text[], $2::text[], $3::text[]) AS r (collection, index_name, term)
        WHERE c.collection = r.collection AND c.index_name = r.index_name AND c.term = r.term AND c.count = 0`, columns.slice(0, 3))
    }
    const totals = new Map<string, number>()
    for (const deltas of jobDeltas) for (const [name, delta] of deltas) totals.set(name, (totals.get(name) ?? 0) + delta)
    const before = new Map<string, number>()
    if (totals.size > 0) {
      const names = [...totals.keys()].sort()
      // The row lock each addition takes holds other coordinators' additions to the same counter until this commits.
      const { rows } = await client.query<{ name: string, value: number }>(`INSERT INTO meshdeploy_counters AS c (name, value)
        SELECT * FROM unnest($1::text[], $2::float8[])
        ON CONFLICT (name) DO UPDATE SET value = c.value + EXCLUDED.value RETURNING name, value`, [names, names.map(name => totals.get(name)!)])
      for (const row of rows) before.set(row.name, row.value - totals.get(row.name)!)
    }
    return before
  }

  /** Tells other coordinators which keys changed; delivered when (and only if) the transaction commits. */
  private async announce (client: pg.PoolClient, finals: Map<CollectionName, Map<string, FinalState>>): Promise<void> {
    const payloads: string[] = []
    for (const [collection, states] of finals) {
      if (!ANNOUNCED_COLLECTIONS.has(collection)) continue
      let keys: string[] = []
      let size = 0
      const emit = (): void => {
        if (keys.length > 0) payloads.push(JSON.stringify({ o: this.origin, c: collection, k: keys }))
        keys = []
        size = 0
      }
      for (const key of states.keys()) {
        const bytes = Buffer.byteLength(JSON.stringify(key))
        // A key too long for one announcement is announced as a resync of the collection.
        if (bytes > MAX_NOTIFY_BYTES - 200) {
          emit()
          payloads.push(JSON.stringify({ o: this.origin, c: collection, all: true }))
          continue
        }
        if (size + bytes + 1 > MAX_NOTIFY_BYTES - 200) emit()
        keys.push(key)
        size += bytes + 1
      }
      emit()
    }
    if (payloads.length > 0) await client.query('SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload', [CHANGE_CHANNEL, payloads])
  }

  /** Opens the change channel: a connection of its own that LISTENs, opened again when lost. */
  private async listen (url: string): Promise<void> {
    const client = new pg.Client({ connectionString: url, application_name: 'meshdeploy-coordinator-listen' })
    client.on('notification', message => { this.received(message.payload) })
    const lost = (error?: Error): void => {
      if (this.listener !== client) return
      this.listener = undefined
      this.listening = false
      client.removeAllListeners('end')
      void client.end().catch(() => {})
      if (this.closed) return
      this.onError(error ?? new Error('the change channel closed'))
      this.retryListen(url, 0)
    }
    client.on('error', lost)
    client.on('end', () => { lost() })
    this.listener = client
    await client.connect()
    await client.query(`LISTEN ${CHANGE_CHANNEL}`)
    this.listening = true
  }

  private retryListen (url: string, attempt: number): void {
    const delay = LISTEN_RETRY_MS[Math.min(attempt, LISTEN_RETRY_MS.length - 1)]
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      if (this.closed) return
      this.listen(url).then(() => {
        // Whatever was announced while the channel was down is lost: what is kept in memory is read again.
        this.changes.emit('resync')
      }, error => {
        this.onError(error as Error)
        this.listener = undefined
        this.retryListen(url, attempt + 1)
      })
    }, delay)
    this.retryTimer.unref()
  }

  /** Whether the change channel is open. */
  get isListening (): boolean {
    return this.listening
  }

  private received (payload: string | undefined): void {
    if (payload === undefined) return
    let message: { o?: unknown, c?: unknown, k?: unknown, all?: unknown }
    try {
      message = JSON.parse(payload)
    } catch {
      return
    }
    if (message.o === this.origin || typeof message.c !== 'string' || !ANNOUNCED_COLLECTIONS.has(message.c as CollectionName)) return
    if (message.all === true) {
      this.changes.emit('resync')
      return
    }
    if (!Array.isArray(message.k) || !message.k.every(key => typeof key === 'string')) return
    const change: StoreChange = { collection: message.c as CollectionName, keys: message.k as string[] }
    this.changes.emit('change', change)
  }

  /** A connection of its own, outside the pool, for what lives as long as a session (a leader's advisory lock). */
  async connectSession (applicationName: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.url, application_name: applicationName, keepAlive: true, keepAliveInitialDelayMillis: 5000 })
    await client.connect()
    return client
  }

  /** Runs `fn` on a connection of the pool (leases, advisory locks held for a session). */
  async withClient<R> (fn: (client: pg.PoolClient) => Promise<R>): Promise<R> {
    const client = await this.pool.connect()
    try {
      return await fn(client)
    } finally {
      client.release()
    }
  }

  /** A query on the pool, for what the store's interface does not cover (leases). */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow> (sql: string, parameters: unknown[] = []): Promise<pg.QueryResult<R>> {
    return await (this.pool as Queryable).query<R>(sql, parameters)
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer)
    await this.commits.idle()
    const listener = this.listener
    this.listener = undefined
    this.listening = false
    if (listener !== undefined) await listener.end().catch(() => {})
    await this.pool.end()
  }
}

/** Each item's state at the end of the operations, and each caller's counter additions. */
function finalStates (operationLists: WriteOperation[][], jobDeltas: Array<Map<string, number>>): Map<CollectionName, Map<string, FinalState>> {
  const finals = new Map<CollectionName, Map<string, FinalState>>()
  for (const operations of operationLists) {
    const deltas = new Map<string, number>()
    jobDeltas.push(deltas)
    for (const operation of operations) {
      if (operation.type === 'add') {
        deltas.set(operation.counter, (deltas.get(operation.counter) ?? 0) + operation.delta)
        continue
      }
      let states = finals.get(operation.collection)
      if (states === undefined) finals.set(operation.collection, states = new Map())
      states.delete(operation.key)
      if (operation.type === 'put') {
        const encoded = JSON.stringify(operation.value)
        if (encoded === undefined) throw new TypeError(`a ${operation.collection} item must be a JSON value`)
        states.set(operation.key, { value: encoded })
      } else {
        states.set(operation.key, { deleted: true })
      }
    }
  }
  return finals
}

async function insertIndexRows (client: pg.PoolClient, rows: IndexRows): Promise<void> {
  if (rows.keys.length === 0) return
  await client.query(`INSERT INTO meshdeploy_index_entries (collection, index_name, term, key)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING`, [rows.collections, rows.indexes, rows.terms, rows.keys])
}

export type { Collections }
