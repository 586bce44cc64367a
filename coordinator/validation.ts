import { z } from 'zod'
import { ValidationError } from './errors.js'

/** Validates input against a schema; failures become a 400 with one message per field. */
export function parseWith<T extends z.ZodType> (schema: T, input: unknown, what = 'request'): z.infer<T> {
  const parsed = schema.safeParse(input)
  if (parsed.success) return parsed.data
  const errors = parsed.error.issues.map(issue => ({ path: issue.path.map(String).join('.') || '(root)', message: issue.message }))
  const summary = errors.slice(0, 3).map(error => `${error.path}: ${error.message}`).join('; ')
  throw new ValidationError(`invalid ${what}: ${summary}`, errors)
}
