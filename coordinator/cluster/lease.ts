import { EventEmitter } from 'node:events'
import type pg from 'pg'
import { LOCK_CLASS } from '../store/postgres-schema.js'
import type { PostgresStore } from '../store/postgres-store.js'

/** How often a coordinator that is not the leader tries to become it. @default 1 s */
export const DEFAULT_LEASE_RETRY_MS = 1000

/** Who runs the scheduler: always this coordinator (one store to itself), or the holder of a shared lease. */
export interface Leadership extends EventEmitter<{ changed: [leader: boolean] }> {
  readonly isLeader: boolean
}

/** A coordinator alone on its store leads always. */
export class SoleLeadership extends EventEmitter<{ changed: [leader: boolean] }> implements Leadership {
  readonly isLeader = true
}

export interface SchedulerLeaseInit {
  store: PostgresStore
  /** @default DEFAULT_LEASE_RETRY_MS */
  retryMs?: number
  onError?: (error: Error) => void
}

/**
 * One coordinator of those sharing a database runs the scheduler, so that a
 * task's rate-controlled release happens once: the one holding a session
 * advisory lock. The lock lives as long as its connection; a coordinator
 * that dies (or loses the database) loses its connection and the lock with
 * it, and another takes it at its next try.
 */
export class SchedulerLease extends EventEmitter<{ changed: [leader: boolean] }> implements Leadership {
  private readonly store: PostgresStore
  private readonly retryMs: number
  private readonly onError: (error: Error) => void
  private client?: pg.Client
  private leader = false
  private stopped = false
  private timer?: NodeJS.Timeout

  constructor (init: SchedulerLeaseInit) {
    super()
    this.store = init.store
    this.retryMs = init.retryMs ?? DEFAULT_LEASE_RETRY_MS
    this.onError = init.onError ?? (() => {})
  }

  get isLeader (): boolean {
    return this.leader
  }

  /** Tries once now, then every `retryMs` while another coordinator leads. */
  async start (): Promise<void> {
    await this.attempt()
  }

  private schedule (): void {
    if (this.stopped) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => { void this.attempt() }, this.retryMs)
    this.timer.unref()
  }

  private async attempt (): Promise<void> {
    if (this.stopped || this.leader) return
    try {
      if (this.client === undefined) {
        const client = await this.store.connectSession('meshdeploy-coordinator-lease')
        client.on('error', error => { this.lost(client, error) })
        client.on('end', () => { this.lost(client) })
        this.client = client
      }
      const { rows } = await this.client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, 0) AS locked', [LOCK_CLASS.leader])
      if (rows[0].locked && !this.stopped) {
        this.leader = true
        this.emit('changed', true)
        return
      }
    } catch (error) {
      this.onError(error as Error)
      if (this.client !== undefined) this.lost(this.client, error as Error)
    }
    this.schedule()
  }

  private lost (client: pg.Client, error?: Error): void {
    if (this.client !== client) return
    this.client = undefined
    client.removeAllListeners('end')
    void client.end().catch(() => {})
    if (error !== undefined) this.onError(error)
    if (this.leader) {
      this.leader = false
      this.emit('changed', false)
    }
    this.schedule()
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    const client = this.client
    this.client = undefined
    const wasLeader = this.leader
    this.leader = false
    if (client !== undefined) {
      client.removeAllListeners('end')
      // Ending the session releases the lock at once: another coordinator takes over at its next try.
      await client.end().catch(() => {})
    }
    if (wasLeader) this.emit('changed', false)
  }
}
