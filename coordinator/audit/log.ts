import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import type { AuditEntry, Store } from '../store/types.js'

export const DEFAULT_AUDIT_PAGE = 100
export const MAX_AUDIT_PAGE = 1000
/** Entries one request looks at while filtering; past it, the page ends early with a cursor to go on. */
export const MAX_AUDIT_SCAN = 50_000

const isoTime = z.iso.datetime({ offset: true })

export const auditQuerySchema = z.object({
  /** Only changes by this operator token name. */
  actor: z.string().min(1).max(100).optional(),
  /** Only changes at or after this time. */
  since: isoTime.optional(),
  /** Only changes before this time. */
  until: isoTime.optional(),
  limit: z.coerce.number().int().min(1).max(MAX_AUDIT_PAGE).optional(),
  /** The `nextCursor` of the previous page. */
  cursor: z.string().regex(/^\d{15}![0-9a-f]{12}$/, 'not a cursor of this log').optional()
}).strict()

export type AuditQuery = z.infer<typeof auditQuerySchema>

export interface AuditPage {
  /** Newest first. */
  entries: AuditEntry[]
  /** Pass as `cursor` for the next (older) page; absent on the last page. */
  nextCursor?: string
}

/** Keys sort by time: 15 digits of milliseconds, then a random suffix for changes in the same millisecond. */
function timeKey (ms: number): string {
  return Math.max(0, Math.floor(ms)).toString().padStart(15, '0')
}

export interface AuditLogInit {
  store: Store
  now?: () => number
}

/**
 * The durable log of every operator change: who (token name, id and role),
 * what (method, path, targets, a summary without secrets), when, from where,
 * and how it ended. An entry is written before the change's answer goes out.
 */
export class AuditLog {
  private readonly store: Store
  private readonly now: () => number

  constructor (init: AuditLogInit) {
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  async record (fields: Omit<AuditEntry, 'id' | 'at'>): Promise<AuditEntry> {
    const now = this.now()
    const id = `${timeKey(now)}!${randomBytes(6).toString('hex')}`
    const entry: AuditEntry = { id, at: new Date(now).toISOString(), ...fields }
    await this.store.write([{ type: 'put', collection: 'audit', key: id, value: entry }])
    return entry
  }

  /** A page of entries, newest first, filtered by actor and time range. */
  async list (query: AuditQuery = {}): Promise<AuditPage> {
    const limit = query.limit ?? DEFAULT_AUDIT_PAGE
    const range: { reverse: true, gte?: string, lt?: string, after?: string } = { reverse: true }
    if (query.since !== undefined) range.gte = timeKey(Date.parse(query.since))
    if (query.until !== undefined) range.lt = timeKey(Date.parse(query.until))
    if (query.cursor !== undefined) range.after = query.cursor
    const entries: AuditEntry[] = []
    let nextCursor: string | undefined
    let scanned = 0
    let lastScanned: string | undefined
    for await (const entry of this.store.collections.audit.values(range)) {
      if (++scanned > MAX_AUDIT_SCAN) {
        nextCursor = lastScanned
        break
      }
      if (query.actor === undefined || entry.actor === query.actor) {
        if (entries.length === limit) {
          nextCursor = lastScanned
          break
        }
        entries.push(entry)
      }
      lastScanned = entry.id
    }
    return nextCursor === undefined ? { entries } : { entries, nextCursor }
  }
}
