import { z } from 'zod'
import { codePointName, findForbiddenText } from '../protocol/text.js'
import { ApiError, ValidationError } from './errors.js'

/** Validates input against a schema; failures become a 400 with one message per field. */
export function parseWith<T extends z.ZodType> (schema: T, input: unknown, what = 'request'): z.infer<T> {
  const parsed = schema.safeParse(input)
  if (parsed.success) return parsed.data
  const errors = parsed.error.issues.map(issue => ({ path: issue.path.map(String).join('.') || '(root)', message: issue.message }))
  const summary = errors.slice(0, 3).map(error => `${error.path}: ${error.message}`).join('; ')
  // A check that names its reason (a label's control characters) gives it to the whole answer when it is the only kind of failure.
  const reasons = new Set(parsed.error.issues.map(issue => issue.code === 'custom' && typeof issue.params?.reason === 'string' ? issue.params.reason : 'invalid-request'))
  throw new ValidationError(`invalid ${what}: ${summary}`, errors, reasons.size === 1 ? [...reasons][0] : 'invalid-request')
}

/**
 * Refuses a body with a control character in any string (tab and line breaks
 * aside): no field of the API takes one, and where text is shown or becomes a
 * path or an argument it would clear screens, forge rows or break calls.
 */
export function refuseControlCharacters (value: unknown, what = 'the body'): void {
  const found = findForbiddenText(value)
  if (found === undefined) return
  throw new ApiError(400, 'control-characters', `${what} holds a control character (${codePointName(found.character)}) at ${found.path}; no field takes control characters but tab and line breaks in free text`, {
    errors: [{ path: found.path, message: `must not contain control characters (found ${codePointName(found.character)})` }]
  })
}
