import { DEFAULT_PAGE_LIMIT, InvalidCursorError, MAX_PAGE_LIMIT } from './types.js'

/** What a cursor remembers: which listing issued it, and the last key it gave. */
export function encodeCursor (listing: string, lastKey: string): string {
  return Buffer.from(JSON.stringify([listing, lastKey]), 'utf8').toString('base64url')
}

export function decodeCursor (cursor: string, listing: string): string {
  let decoded: unknown
  try {
    decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    throw new InvalidCursorError()
  }
  if (!Array.isArray(decoded) || decoded.length !== 2 || decoded[0] !== listing || typeof decoded[1] !== 'string') throw new InvalidCursorError()
  return decoded[1]
}

export function pageLimit (limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_PAGE_LIMIT
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError('a page limit is a whole number of at least 1')
  return Math.min(limit, MAX_PAGE_LIMIT)
}
