import { z } from 'zod'
import { ValidationError } from './errors.js'
import { DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT } from './store/types.js'

export { DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT }

/** Items one listing request looks at, at most, when filters leave most of them out: a page may come back short, with a cursor. */
export const MAX_SCANNED_PER_PAGE = 20_000

/** The `limit` and `cursor` query parameters every paged listing takes. */
export const pageQueryShape = {
  /** Items per page. @default 500 */
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_LIMIT).optional(),
  /** The `nextCursor` of the previous page. */
  cursor: z.string().min(1).max(4096).optional()
}

/** A cursor this listing did not issue, was altered, or was issued for other filters. */
export class InvalidListingCursorError extends ValidationError {
  constructor (listing: string) {
    super(`the cursor is not one this listing (${listing}) issued with these filters; start again without a cursor`, [{ path: 'cursor', message: 'not a cursor of this listing' }], 'invalid-cursor')
    this.name = 'InvalidListingCursorError'
  }
}

/**
 * What a listing's cursor remembers: which listing and filters issued it,
 * and where it stopped. Opaque to clients; a cursor passed to another listing
 * or with other filters is refused rather than silently giving wrong pages.
 */
export function encodeListingCursor (listing: string, filters: Record<string, string | undefined>, position: string): string {
  return Buffer.from(JSON.stringify([listing, filterKey(filters), position]), 'utf8').toString('base64url')
}

export function decodeListingCursor (cursor: string, listing: string, filters: Record<string, string | undefined>): string {
  let decoded: unknown
  try {
    decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    throw new InvalidListingCursorError(listing)
  }
  if (!Array.isArray(decoded) || decoded.length !== 3 || decoded[0] !== listing || decoded[1] !== filterKey(filters) || typeof decoded[2] !== 'string' || decoded[2] === '') {
    throw new InvalidListingCursorError(listing)
  }
  return decoded[2]
}

function filterKey (filters: Record<string, string | undefined>): string {
  return Object.keys(filters).sort().filter(name => filters[name] !== undefined).map(name => `${name}=${filters[name]!}`).join('&')
}

/** The first index of a sorted array whose item is greater than `after` (all of them without `after`). */
export function indexAfter (sorted: readonly string[], after: string | undefined): number {
  if (after === undefined) return 0
  let low = 0
  let high = sorted.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if (sorted[middle] <= after) low = middle + 1
    else high = middle
  }
  return low
}
