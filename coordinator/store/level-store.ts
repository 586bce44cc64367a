import { Level } from 'level'
import type { AbstractSublevel } from 'abstract-level'
import { GroupCommit } from './group-commit.js'
import { decodeCursor, encodeCursor, pageLimit } from './cursors.js'
import {
  STORE_INDEXES, UnknownIndexError,
  type Collection, type CollectionName, type Collections, type CounterOperation, type Counters, type IndexDefinition, type Page, type PageOptions,
  type RangeOptions, type Store, type WriteOperation, type WriteResult
} from './types.js'

export const COLLECTION_NAMES: CollectionName[] = [
  'packages', 'tasks', 'devices', 'deviceTasks', 'statusLog', 'operatorTokens', 'enrollmentTokens', 'credentials', 'audit', 'meta',
  'releases', 'users', 'publishers', 'requests', 'events', 'sites', 'boundaries',
  'pushCredentials', 'pushInstalls', 'pushHosts', 'hostKeys', 'maintenanceWindows', 'installations'
]

type Sublevel = AbstractSublevel<any, any, string, unknown>

/** Operations merged into one durable write at most; more wait for the next. */
const MAX_OPERATIONS_PER_WRITE = 50_000
/** Where the store notes which indexes it has built. */
const INDEX_DECLARATION_KEY = 'store:indexes'
/** Keys read per step of a scan. */
const SCAN_PAGE = 1000

/** Index keys: the term's length, the term, then the item's key, so that a term's items are one range in key order. */
function termPrefix (term: string): string {
  return `${term.length.toString(36)}:${term}:`
}

function upperBound (prefix: string): string {
  return prefix + '\uffff'
}

/** Reads one page of a sublevel's keys (and values) after `after`, within a prefix. */
async function readRange (sublevel: Sublevel, prefix: string, after: string | undefined, limit: number, keysOnly: boolean): Promise<{ entries: Array<[string, unknown]>, more: boolean }> {
  const range: Record<string, unknown> = { lt: upperBound(prefix), limit: limit + 1 }
  if (after !== undefined) range.gt = after
  else range.gte = prefix
  const entries: Array<[string, unknown]> = []
  if (keysOnly) {
    for await (const key of sublevel.keys(range)) entries.push([key as string, undefined])
  } else {
    for await (const [key, value] of sublevel.iterator(range)) entries.push([key as string, value])
  }
  const more = entries.length > limit
  if (more) entries.length = limit
  return { entries, more }
}

class LevelCollection<T> implements Collection<T> {
  constructor (
    private readonly name: CollectionName,
    private readonly sublevel: Sublevel,
    private readonly indexes: Map<string, Sublevel>,
    private readonly counts: Sublevel
  ) {}

  async get (key: string): Promise<T | undefined> {
    return await this.sublevel.get(key) as T | undefined
  }

  async getMany (keys: string[]): Promise<Array<T | undefined>> {
    if (keys.length === 0) return []
    return await this.sublevel.getMany(keys) as Array<T | undefined>
  }

  async page (options: PageOptions = {}): Promise<Page<T>> {
    const limit = pageLimit(options.limit)
    const keysOnly = options.keysOnly === true
    if (options.index === undefined) {
      const prefix = options.prefix ?? ''
      const listing = `p:${prefix}`
      const after = options.cursor !== undefined ? decodeCursor(options.cursor, listing) : undefined
      const { entries, more } = await readRange(this.sublevel, prefix, after, limit, keysOnly)
      const page: Page<T> = { items: entries.map(([key, value]) => ({ key, value: value as T })) }
      if (more) page.cursor = encodeCursor(listing, entries[entries.length - 1][0])
      return page
    }
    const index = this.indexes.get(options.index.name)
    if (index === undefined) throw new UnknownIndexError(this.name, options.index.name)
    const base = termPrefix(options.index.term)
    const listing = `i:${options.index.name}:${options.index.term}:${options.prefix ?? ''}`
    const after = options.cursor !== undefined ? base + decodeCursor(options.cursor, listing) : undefined
    const { entries, more } = await readRange(index, base + (options.prefix ?? ''), after, limit, true)
    const keys = entries.map(([indexKey]) => indexKey.slice(base.length))
    const items: Page<T>['items'] = []
    if (keysOnly) {
      for (const key of keys) items.push({ key, value: undefined as T })
    } else {
      const values = await this.getMany(keys)
      // An item written between the two reads may be gone: it is left out, not shown as empty.
      for (const [at, key] of keys.entries()) if (values[at] !== undefined) items.push({ key, value: values[at] as T })
    }
    const page: Page<T> = { items }
    if (more) page.cursor = encodeCursor(listing, keys[keys.length - 1])
    return page
  }

  async count (index: { name: string, term: string }): Promise<number> {
    const definition = STORE_INDEXES[this.name]?.[index.name] as IndexDefinition<unknown> | undefined
    if (definition === undefined) throw new UnknownIndexError(this.name, index.name)
    if (definition.counted !== true) throw new UnknownIndexError(this.name, `${index.name} (counted)`)
    return (await this.counts.get(countKey(this.name, index.name, index.term)) as number | undefined) ?? 0
  }

  async * entries (options: RangeOptions = {}): AsyncGenerator<[string, T]> {
    const range: Record<string, unknown> = { reverse: options.reverse ?? false }
    if (options.limit !== undefined) range.limit = options.limit
    if (options.prefix !== undefined) {
      range.gte = options.prefix
      range.lt = upperBound(options.prefix)
    }
    if (options.gte !== undefined && (range.gte === undefined || options.gte > (range.gte as string))) range.gte = options.gte
    if (options.lt !== undefined && (range.lt === undefined || options.lt < (range.lt as string))) range.lt = options.lt
    if (options.after !== undefined) {
      if (options.reverse === true) {
        if (range.lt === undefined || options.after < (range.lt as string)) range.lt = options.after
      } else if (range.gte === undefined || options.after >= (range.gte as string)) {
        delete range.gte
        range.gt = options.after
      }
    }
    // Read in steps, so that a long scan holds no iterator open across the caller's awaits.
    let remaining = options.limit ?? Number.POSITIVE_INFINITY
    for (;;) {
      const step: Array<[string, T]> = []
      for await (const [key, value] of this.sublevel.iterator({ ...range, limit: Math.min(SCAN_PAGE, remaining) })) step.push([key as string, value as T])
      for (const entry of step) yield entry
      remaining -= step.length
      if (step.length < SCAN_PAGE || remaining <= 0) return
      const last = step[step.length - 1][0]
      if (options.reverse === true) {
        delete range.lte
        range.lt = last
      } else {
        delete range.gte
        range.gt = last
      }
    }
  }

  async * values (options: RangeOptions = {}): AsyncGenerator<T> {
    for await (const [, value] of this.entries(options)) yield value
  }
}

function countKey (collection: string, index: string, term: string): string {
  return `${collection}\u0000${index}\u0000${term}`
}

class LevelCounters implements Counters {
  constructor (private readonly sublevel: Sublevel) {}

  async get (counter: string): Promise<number> {
    return (await this.sublevel.get(counter) as number | undefined) ?? 0
  }

  async getMany (counters: string[]): Promise<number[]> {
    if (counters.length === 0) return []
    return (await this.sublevel.getMany(counters) as Array<number | undefined>).map(value => value ?? 0)
  }

  async page (options: { prefix: string, limit?: number, cursor?: string }): Promise<Page<number>> {
    const limit = pageLimit(options.limit)
    const listing = `c:${options.prefix}`
    const after = options.cursor !== undefined ? decodeCursor(options.cursor, listing) : undefined
    const { entries, more } = await readRange(this.sublevel, options.prefix, after, limit, false)
    const page: Page<number> = { items: entries.map(([key, value]) => ({ key, value: value as number })) }
    if (more) page.cursor = encodeCursor(listing, entries[entries.length - 1][0])
    return page
  }
}

interface WriteJob {
  operations: WriteOperation[]
  result: WriteResult
}

type LevelOperation = { type: 'put', sublevel: Sublevel, key: string, value: unknown } | { type: 'del', sublevel: Sublevel, key: string }

/**
 * The default store: level (LevelDB) with one sublevel per collection, one
 * per declared index and one for counters. Writes that arrive while one is
 * being flushed to disk are merged into the next (group commit): each
 * caller's operations stay atomic and in order, and one flush serves them
 * all. Indexes and counters are read, changed and written in the same
 * flush, one flush at a time, so they never drift from the items.
 */
export class LevelStore implements Store {
  readonly collections: Store['collections']
  readonly counters: Counters
  private readonly db: Level<string, unknown>
  private readonly sublevels: Record<CollectionName, Sublevel>
  private readonly indexSublevels = new Map<CollectionName, Map<string, Sublevel>>()
  private readonly countSublevel: Sublevel
  private readonly counterSublevel: Sublevel
  private readonly commits: GroupCommit<WriteJob>

  private constructor (db: Level<string, unknown>) {
    this.db = db
    this.sublevels = Object.fromEntries(COLLECTION_NAMES.map(name => [name, db.sublevel<string, unknown>(name, { valueEncoding: 'json' })])) as Record<CollectionName, Sublevel>
    for (const name of COLLECTION_NAMES) {
      const indexes = new Map<string, Sublevel>()
      for (const index of Object.keys(STORE_INDEXES[name] ?? {})) indexes.set(index, db.sublevel<string, unknown>(`index~${name}~${index}`, { valueEncoding: 'json' }))
      this.indexSublevels.set(name, indexes)
    }
    this.countSublevel = db.sublevel<string, unknown>('index-counts', { valueEncoding: 'json' })
    this.counterSublevel = db.sublevel<string, unknown>('counters', { valueEncoding: 'json' })
    this.collections = Object.fromEntries(COLLECTION_NAMES.map(name => [name, new LevelCollection(name, this.sublevels[name], this.indexSublevels.get(name)!, this.countSublevel)])) as unknown as Store['collections']
    this.counters = new LevelCounters(this.counterSublevel)
    this.commits = new GroupCommit<WriteJob>({
      flush: async jobs => { await this.flush(jobs) },
      weightOf: job => job.operations.length,
      maxWeightPerFlush: MAX_OPERATIONS_PER_WRITE
    })
  }

  static async open (location: string): Promise<LevelStore> {
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' })
    await db.open()
    const store = new LevelStore(db)
    try {
      await store.buildIndexes()
    } catch (error) {
      await db.close()
      throw error
    }
    return store
  }

  /**
   * Builds the indexes when their declaration changed since they were last
   * built (or a store made before them is opened): every indexed item is
   * listed again, once, at start.
   */
  private async buildIndexes (): Promise<void> {
    const declared = JSON.stringify(Object.entries(STORE_INDEXES).map(([collection, indexes]) => [collection, Object.entries(indexes ?? {}).map(([name, definition]) => [name, definition.counted === true])]))
    const meta = this.sublevels.meta
    if (await meta.get(INDEX_DECLARATION_KEY) === declared) return
    for (const indexes of this.indexSublevels.values()) for (const sublevel of indexes.values()) await sublevel.clear()
    await this.countSublevel.clear()
    for (const [collection, indexes] of this.indexSublevels) {
      if (indexes.size === 0) continue
      let operations: LevelOperation[] = []
      const counts = new Map<string, number>()
      for await (const [key, value] of this.collections[collection].entries()) {
        this.moveIndexes(collection, key, undefined, value, operations, counts)
        if (operations.length >= 10_000) {
          await this.db.batch(operations as any)
          operations = []
        }
      }
      for (const [key, value] of counts) operations.push({ type: 'put', sublevel: this.countSublevel, key, value })
      await this.db.batch(operations as any)
    }
    await this.db.batch([{ type: 'put', sublevel: meta, key: INDEX_DECLARATION_KEY, value: declared }] as any, { sync: true } as any)
  }

  async write (operations: WriteOperation[]): Promise<WriteResult> {
    const job: WriteJob = { operations, result: { counters: new Map() } }
    if (operations.length === 0) return job.result
    await this.commits.commit(job)
    return job.result
  }

  /** One durable write for several callers: their operations in order, the indexes they move and the counters they change. */
  private async flush (jobs: WriteJob[]): Promise<void> {
    const previous = await this.readPrevious(jobs)
    const counterDeltas: Array<Map<string, number>> = []
    const countDeltas = new Map<string, number>()
    const operations: LevelOperation[] = []
    for (const job of jobs) {
      const deltas = new Map<string, number>()
      counterDeltas.push(deltas)
      for (const operation of job.operations) {
        if (operation.type === 'add') {
          deltas.set(operation.counter, (deltas.get(operation.counter) ?? 0) + operation.delta)
          continue
        }
        const sublevel = this.sublevels[operation.collection]
        const known = previous.get(operation.collection)
        if (known !== undefined) {
          const before = known.get(operation.key)
          const after = operation.type === 'put' ? operation.value : undefined
          this.moveIndexes(operation.collection, operation.key, before, after, operations, countDeltas)
          known.set(operation.key, after)
        }
        operations.push(operation.type === 'put'
          ? { type: 'put', sublevel, key: operation.key, value: operation.value }
          : { type: 'del', sublevel, key: operation.key })
      }
    }
    await this.applyCounts(countDeltas, operations)
    await this.applyCounters(jobs, counterDeltas, operations)
    await this.db.batch(operations as any, { sync: true } as any)
  }

  /** The values the indexed items had before this write, read once per key. */
  private async readPrevious (jobs: WriteJob[]): Promise<Map<CollectionName, Map<string, unknown>>> {
    const keys = new Map<CollectionName, Set<string>>()
    for (const job of jobs) {
      for (const operation of job.operations) {
        if (operation.type === 'add' || (this.indexSublevels.get(operation.collection)?.size ?? 0) === 0) continue
        let set = keys.get(operation.collection)
        if (set === undefined) keys.set(operation.collection, set = new Set())
        set.add(operation.key)
      }
    }
    const previous = new Map<CollectionName, Map<string, unknown>>()
    for (const [collection, set] of keys) {
      const list = [...set]
      const values = await this.sublevels[collection].getMany(list)
      previous.set(collection, new Map(list.map((key, at) => [key, values[at]])))
    }
    return previous
  }

  private moveIndexes (collection: CollectionName, key: string, before: unknown, after: unknown, operations: LevelOperation[], countDeltas: Map<string, number>): void {
    const definitions = STORE_INDEXES[collection] as Record<string, IndexDefinition<unknown>> | undefined
    if (definitions === undefined) return
    for (const [name, definition] of Object.entries(definitions)) {
      const oldTerms = new Set(before !== undefined ? definition.terms(before) : [])
      const newTerms = new Set(after !== undefined ? definition.terms(after) : [])
      const sublevel = this.indexSublevels.get(collection)!.get(name)!
      for (const term of oldTerms) {
        if (newTerms.has(term)) continue
        operations.push({ type: 'del', sublevel, key: termPrefix(term) + key })
        if (definition.counted === true) countDeltas.set(countKey(collection, name, term), (countDeltas.get(countKey(collection, name, term)) ?? 0) - 1)
      }
      for (const term of newTerms) {
        if (oldTerms.has(term)) continue
        operations.push({ type: 'put', sublevel, key: termPrefix(term) + key, value: '' })
        if (definition.counted === true) countDeltas.set(countKey(collection, name, term), (countDeltas.get(countKey(collection, name, term)) ?? 0) + 1)
      }
    }
  }

  private async applyCounts (deltas: Map<string, number>, operations: LevelOperation[]): Promise<void> {
    const keys = [...deltas.keys()].filter(key => deltas.get(key) !== 0)
    if (keys.length === 0) return
    const current = await this.countSublevel.getMany(keys) as Array<number | undefined>
    for (const [at, key] of keys.entries()) {
      const value = (current[at] ?? 0) + deltas.get(key)!
      operations.push(value === 0 ? { type: 'del', sublevel: this.countSublevel, key } : { type: 'put', sublevel: this.countSublevel, key, value })
    }
  }

  private async applyCounters (jobs: WriteJob[], deltas: Array<Map<string, number>>, operations: LevelOperation[]): Promise<void> {
    const names = [...new Set(deltas.flatMap(map => [...map.keys()]))]
    if (names.length === 0) return
    const current = await this.counters.getMany(names)
    const values = new Map(names.map((name, at) => [name, current[at]]))
    // Each caller learns the value its own addition made, in the order the callers came.
    for (const [at, job] of jobs.entries()) {
      for (const [name, delta] of deltas[at]) {
        const value = values.get(name)! + delta
        values.set(name, value)
        job.result.counters.set(name, value)
      }
    }
    for (const [name, value] of values) operations.push({ type: 'put', sublevel: this.counterSublevel, key: name, value })
  }

  async close (): Promise<void> {
    await this.commits.idle()
    await this.db.close()
  }
}

/** Collects an async generator into an array. */
export async function collect<T> (source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of source) out.push(item)
  return out
}

/** Every key of a listing, page by page (for a caller that needs them all, such as the scheduler resolving a target). */
export async function * pages<T> (collection: Collection<T>, options: Omit<PageOptions, 'cursor'>): AsyncGenerator<Page<T>> {
  let cursor: string | undefined
  do {
    const page = await collection.page({ ...options, limit: options.limit ?? 5000, ...(cursor !== undefined ? { cursor } : {}) })
    yield page
    cursor = page.cursor
  } while (cursor !== undefined)
}

export type { Collections, CounterOperation }
