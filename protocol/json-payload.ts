import { z } from 'zod'
import { fromUtf8 } from './encoding.js'
import { MalformedError } from './errors.js'

/** Decodes signed payload bytes as UTF-8 JSON of a schema; throws MalformedError naming `what` otherwise. */
export function parseJsonPayload<T> (bytes: Uint8Array, schema: z.ZodType<T>, what: string): T {
  let decoded: unknown
  try {
    decoded = JSON.parse(fromUtf8(bytes))
  } catch (error) {
    throw new MalformedError(`${what} is not UTF-8 JSON`, { cause: error })
  }
  const parsed = schema.safeParse(decoded)
  if (!parsed.success) throw new MalformedError(`${what}: ${z.prettifyError(parsed.error)}`)
  return parsed.data
}
