import { Level } from 'level'
import type { Collection, CollectionName, Collections, RangeOptions, Store, WriteOperation } from './types.js'

const COLLECTION_NAMES: CollectionName[] = [
  'packages', 'tasks', 'devices', 'deviceTasks', 'statusLog', 'operatorTokens', 'enrollmentTokens', 'credentials', 'audit', 'meta',
  'releases', 'users', 'publishers', 'requests', 'events', 'sites', 'boundaries'
]

import type { AbstractSublevel } from 'abstract-level'

type Sublevel = AbstractSublevel<any, any, string, unknown>

class LevelCollection<T> implements Collection<T> {
  constructor (private readonly sublevel: Sublevel) {}

  async get (key: string): Promise<T | undefined> {
    return await this.sublevel.get(key) as T | undefined
  }

  async getMany (keys: string[]): Promise<Array<T | undefined>> {
    if (keys.length === 0) return []
    return await this.sublevel.getMany(keys) as Array<T | undefined>
  }

  async * entries (options: RangeOptions = {}): AsyncGenerator<[string, T]> {
    const range: Record<string, unknown> = { reverse: options.reverse ?? false }
    if (options.limit !== undefined) range.limit = options.limit
    if (options.prefix !== undefined) {
      range.gte = options.prefix
      range.lt = options.prefix + '\uffff'
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
    for await (const [key, value] of this.sublevel.iterator(range)) yield [key as string, value as T]
  }

  async * values (options: RangeOptions = {}): AsyncGenerator<T> {
    for await (const [, value] of this.entries(options)) yield value
  }
}

/** Operations merged into one durable write at most; more wait for the next. */
const MAX_OPERATIONS_PER_WRITE = 50_000

interface PendingWrite {
  operations: WriteOperation[]
  resolve: () => void
  reject: (error: unknown) => void
}

/**
 * The default store: level (LevelDB) with one sublevel per collection.
 * Writes that arrive while one is being flushed to disk are merged into the
 * next (group commit): each caller's operations stay atomic and in order,
 * and one flush serves them all.
 */
export class LevelStore implements Store {
  readonly collections: Store['collections']
  private readonly db: Level<string, unknown>
  private readonly sublevels: Record<CollectionName, Sublevel>
  private readonly queue: PendingWrite[] = []
  private writing?: Promise<void>

  private constructor (db: Level<string, unknown>) {
    this.db = db
    this.sublevels = Object.fromEntries(COLLECTION_NAMES.map(name => [name, db.sublevel<string, unknown>(name, { valueEncoding: 'json' })])) as Record<CollectionName, Sublevel>
    this.collections = Object.fromEntries(COLLECTION_NAMES.map(name => [name, new LevelCollection(this.sublevels[name])])) as unknown as Store['collections']
  }

  static async open (location: string): Promise<LevelStore> {
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' })
    await db.open()
    return new LevelStore(db)
  }

  async write (operations: WriteOperation[]): Promise<void> {
    if (operations.length === 0) return
    await new Promise<void>((resolve, reject) => {
      this.queue.push({ operations, resolve, reject })
      this.writing ??= this.drain()
    })
  }

  private async drain (): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const writes: PendingWrite[] = []
        let count = 0
        while (this.queue.length > 0 && (writes.length === 0 || count + this.queue[0].operations.length <= MAX_OPERATIONS_PER_WRITE)) {
          const next = this.queue.shift()!
          writes.push(next)
          count += next.operations.length
        }
        try {
          await this.batch(writes.flatMap(write => write.operations))
          for (const write of writes) write.resolve()
        } catch (error) {
          if (writes.length === 1) {
            writes[0].reject(error)
            continue
          }
          // One caller's bad operation must not fail the others: each goes alone.
          for (const write of writes) await this.batch(write.operations).then(write.resolve, write.reject)
        }
      }
    } finally {
      this.writing = undefined
    }
  }

  private async batch (operations: WriteOperation[]): Promise<void> {
    await this.db.batch(operations.map(operation => operation.type === 'put'
      ? { type: 'put' as const, sublevel: this.sublevels[operation.collection], key: operation.key, value: operation.value }
      : { type: 'del' as const, sublevel: this.sublevels[operation.collection], key: operation.key }
    ) as any, { sync: true } as any)
  }

  async close (): Promise<void> {
    while (this.writing !== undefined) await this.writing
    await this.db.close()
  }
}

/** Collects an async generator into an array. */
export async function collect<T> (source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of source) out.push(item)
  return out
}

export type { Collections }
