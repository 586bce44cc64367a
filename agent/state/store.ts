import { Level } from 'level'
import type { AbstractSublevel } from 'abstract-level'
import type { DeviceTaskState, SignedEnvelope } from '../../protocol/index.js'
import { DataFolderLockedError } from '../errors.js'

/** The agent's durable view of one task. */
export interface LocalTask {
  taskId: string
  /** The highest revision accepted; a lower one is a rollback and is refused. */
  revision: number
  /** The accepted manifest; absent while only refusals were seen. */
  manifest?: SignedEnvelope
  state: DeviceTaskState
  /** Run number; 0 before the first run. */
  attempt: number
  /** Failed runs (the attempt counter); kept across revisions, reset by a re-run for failed devices. */
  failures: number
  /** The manifest's re-run counter when this state began. */
  rerun?: number
  /** The boot a pending reboot was reported in: a later boot means the reboot happened. */
  bootId?: string
  /** A reboot the task's policy asks for, waiting for a maintenance window. */
  pendingReboot?: { delaySeconds: number, message: string, forceCloseApps: boolean }
  /** Last status sequence number issued. */
  seq: number
  bytesFromPeers: number
  bytesFromOrigin: number
  retryAt?: number
  final?: boolean
  exitCode?: number | null
  message?: string
  updatedAt: number
}

export interface OutboxEntry {
  /** Dedup key of the record: `device/task/attempt/seq`. */
  key: string
  envelope: SignedEnvelope
  addedAt: number
}

type Sublevel<V> = AbstractSublevel<any, any, string, V>

function pad (value: number): string {
  return value.toString().padStart(16, '0')
}

/** Tasks and the status outbox, in level under the agent's data folder. */
export class AgentStore {
  private readonly db: Level<string, unknown>
  private readonly tasks: Sublevel<LocalTask>
  private readonly outbox: Sublevel<OutboxEntry>
  private readonly meta: Sublevel<unknown>
  private outboxCounter = 0

  private constructor (db: Level<string, unknown>) {
    this.db = db
    this.tasks = db.sublevel<string, LocalTask>('tasks', { valueEncoding: 'json' })
    this.outbox = db.sublevel<string, OutboxEntry>('outbox', { valueEncoding: 'json' })
    this.meta = db.sublevel<string, unknown>('meta', { valueEncoding: 'json' })
  }

  /** Opens the store; a second agent on the same folder gets DataFolderLockedError. */
  static async open (location: string, dataDir: string): Promise<AgentStore> {
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' })
    try {
      await db.open()
    } catch (error) {
      const cause = (error as { cause?: { code?: string, message?: string } }).cause
      if ((error as { code?: string }).code === 'LEVEL_LOCKED' || cause?.code === 'LEVEL_LOCKED' || /lock/i.test(cause?.message ?? '')) {
        throw new DataFolderLockedError(dataDir, { cause: error })
      }
      throw error
    }
    const store = new AgentStore(db)
    for await (const key of store.outbox.keys({ reverse: true, limit: 1 })) store.outboxCounter = Number(key)
    return store
  }

  async getTask (taskId: string): Promise<LocalTask | undefined> {
    return await this.tasks.get(taskId)
  }

  async listTasks (): Promise<LocalTask[]> {
    const out: LocalTask[] = []
    for await (const task of this.tasks.values()) out.push(task)
    return out
  }

  async putTask (task: LocalTask): Promise<void> {
    await this.tasks.put(task.taskId, task, { sync: true } as any)
  }

  /** Saves the task and queues its new status record in one atomic, durable write; resolves with the record's outbox id. */
  async commitStatus (task: LocalTask, entry: OutboxEntry): Promise<string> {
    const id = pad(++this.outboxCounter)
    await this.db.batch([
      { type: 'put', sublevel: this.tasks, key: task.taskId, value: task },
      { type: 'put', sublevel: this.outbox, key: id, value: entry }
    ] as any, { sync: true } as any)
    return id
  }

  async outboxBatch (limit: number): Promise<Array<{ id: string } & OutboxEntry>> {
    const out: Array<{ id: string } & OutboxEntry> = []
    for await (const [id, entry] of this.outbox.iterator({ limit })) out.push({ id, ...entry })
    return out
  }

  async outboxSize (): Promise<number> {
    let count = 0
    for await (const key of this.outbox.keys()) { void key; count++ }
    return count
  }

  async removeFromOutbox (ids: string[]): Promise<void> {
    if (ids.length === 0) return
    await this.outbox.batch(ids.map(id => ({ type: 'del' as const, key: id })), { sync: true } as any)
  }

  async getMeta<T> (key: string): Promise<T | undefined> {
    return await this.meta.get(key) as T | undefined
  }

  async putMeta (key: string, value: unknown): Promise<void> {
    await this.meta.put(key, value, { sync: true } as any)
  }

  async close (): Promise<void> {
    await this.db.close()
  }
}
