import { EventEmitter } from 'node:events'
import type { Logger } from '../protocol/logger.js'

/** What was refused: a manifest, a key rotation, a chunk's bytes, a peer, a status record (refused by the coordinator) or a status gossip message. */
export type RefusalSubject = 'manifest' | 'key-rotation' | 'chunk' | 'peer' | 'status' | 'maintenance-windows'

export interface Refusal {
  subject: RefusalSubject
  /** A stable, kebab-case name for the cause (`hash-mismatch`, `peer-not-allowed`, `expired`…). */
  reason: string
  /** What happened, for a person. */
  message: string
  peer?: string
  /** The remote address, where no peer id is known yet (a connection refused before its handshake). */
  address?: string
  taskId?: string
  packageId?: string
  index?: number
  /** More structured fields for the log line. */
  details?: Record<string, unknown>
}

export type RefusalLevel = 'info' | 'warn' | 'error'

export interface RefusalLogInit {
  logger: Logger
  /** Identical refusals within this window after the first are counted, not logged. @default 60000 */
  repeatWindowMs?: number
  /** Distinct refusals remembered for the count; the oldest are forgotten first. @default 1000 */
  maxKeys?: number
  now?: () => number
}

export const DEFAULT_REPEAT_WINDOW_MS = 60_000
export const DEFAULT_MAX_REFUSAL_KEYS = 1000

interface Seen {
  loggedAt: number
  suppressed: number
}

/**
 * Every refusal of the agent goes through here: it is logged once with its
 * reason as structured fields, and emitted as an event. A refusal identical
 * to one logged within the repeat window (same subject, reason, peer or
 * address, task) is counted instead of logged, and the count rides on the
 * next line logged for it, so a peer hammering the agent cannot flood its log.
 */
export class RefusalLog extends EventEmitter<{ refused: [refusal: Refusal] }> {
  private readonly logger: Logger
  private readonly repeatWindowMs: number
  private readonly maxKeys: number
  private readonly now: () => number
  private readonly seen = new Map<string, Seen>()

  constructor (init: RefusalLogInit) {
    super()
    this.logger = init.logger
    this.repeatWindowMs = init.repeatWindowMs ?? DEFAULT_REPEAT_WINDOW_MS
    this.maxKeys = init.maxKeys ?? DEFAULT_MAX_REFUSAL_KEYS
    this.now = init.now ?? Date.now
  }

  refuse (refusal: Refusal, level: RefusalLevel = 'warn'): void {
    this.emit('refused', refusal)
    const key = [refusal.subject, refusal.reason, refusal.peer ?? '', hostOf(refusal.address), refusal.taskId ?? ''].join('\n')
    const now = this.now()
    const seen = this.seen.get(key)
    if (seen !== undefined && now - seen.loggedAt < this.repeatWindowMs) {
      seen.suppressed++
      return
    }
    this.seen.delete(key)
    this.seen.set(key, { loggedAt: now, suppressed: 0 })
    while (this.seen.size > this.maxKeys) this.seen.delete(this.seen.keys().next().value!)
    const { subject, message, details, ...fields } = refusal
    this.logger[level]({
      refused: subject,
      ...fields,
      ...details,
      ...(seen !== undefined && seen.suppressed > 0 ? { repeated: seen.suppressed } : {})
    }, `refused ${subject}: ${message}`)
  }
}

/** An address without its port: a peer reconnecting from new ports is still one source. */
function hostOf (address: string | undefined): string {
  if (address === undefined) return ''
  return address.replace(/\/tcp\/\d+.*$/, '')
}
