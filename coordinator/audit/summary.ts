/**
 * What the audit log keeps of a request: its fields with every secret
 * removed and every value bounded, so that an entry is small and never
 * carries a credential.
 */

/** Field names whose values are never written to the audit log. */
const SECRET_FIELD = /token|secret|credential|password|passphrase|private|authorization|cookie|signature/i

/** Values that identify what a change produced, picked from the answer. */
const RESULT_FIELDS = ['id', 'name', 'version', 'role', 'status', 'revision', 'keyId', 'sequence', 'sizeBytes', 'sha256'] as const

export const MAX_SUMMARY_STRING_CHARS = 200
export const MAX_SUMMARY_ARRAY_ITEMS = 20
export const MAX_SUMMARY_DEPTH = 4
export const MAX_SUMMARY_JSON_CHARS = 4096

function bounded (value: unknown, depth: number): unknown {
  if (value === null || typeof value === 'number' || typeof value === 'boolean') return value
  if (typeof value === 'string') return value.length > MAX_SUMMARY_STRING_CHARS ? `${value.slice(0, MAX_SUMMARY_STRING_CHARS)}… (${value.length} chars)` : value
  if (depth >= MAX_SUMMARY_DEPTH) return '…'
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_SUMMARY_ARRAY_ITEMS).map(item => bounded(item, depth + 1))
    if (value.length > MAX_SUMMARY_ARRAY_ITEMS) items.push(`… ${value.length - MAX_SUMMARY_ARRAY_ITEMS} more`)
    return items
  }
  if (typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
      // A key id names a public key and is not a secret.
      out[key] = SECRET_FIELD.test(key) && key !== 'keyId' ? '[redacted]' : bounded(item, depth + 1)
    }
    return out
  }
  return typeof value
}

/**
 * Summarises a change: the request body (secrets redacted, values cut) and
 * the identifying fields of what it produced. The whole stays under
 * MAX_SUMMARY_JSON_CHARS.
 */
export function summarizeChange (requestBody: unknown, answer: unknown): Record<string, unknown> {
  const summary: Record<string, unknown> = {}
  if (requestBody !== undefined) summary.request = bounded(requestBody, 0)
  if (answer !== null && typeof answer === 'object' && !Array.isArray(answer)) {
    const result: Record<string, unknown> = {}
    for (const field of RESULT_FIELDS) {
      const value = (answer as Record<string, unknown>)[field]
      if (typeof value === 'string' || typeof value === 'number') result[field] = bounded(value, 0)
    }
    if (Object.keys(result).length > 0) summary.result = result
  }
  if (JSON.stringify(summary).length > MAX_SUMMARY_JSON_CHARS) {
    return { truncated: true, request: JSON.stringify(summary.request ?? null).slice(0, MAX_SUMMARY_JSON_CHARS / 2), result: summary.result ?? null }
  }
  return summary
}

/** The ids a change concerned: its path parameters, then the id of what it created. */
export function targetIdsOf (params: Record<string, string>, answer: unknown): string[] {
  const ids = Object.values(params).filter(value => value !== '')
  const created = answer !== null && typeof answer === 'object' ? (answer as { id?: unknown }).id : undefined
  if (typeof created === 'string' && !ids.includes(created)) ids.push(created)
  return ids.map(id => id.slice(0, MAX_SUMMARY_STRING_CHARS))
}
