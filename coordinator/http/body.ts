import type { Context } from 'koa'
import { MAX_JSON_BODY_BYTES } from '../../protocol/index.js'
import { PayloadTooLargeError, UnsupportedMediaTypeError, ValidationError } from '../errors.js'

/** Deepest nesting accepted in a JSON body; deeper documents are refused before parsing. */
export const MAX_JSON_DEPTH = 32

function exceedsDepth (text: string, maxDepth: number): boolean {
  let depth = 0
  let inString = false
  for (let index = 0; index < text.length; index++) {
    const char = text[index]
    if (inString) {
      if (char === '\\') index++
      else if (char === '"') inString = false
    } else if (char === '"') {
      inString = true
    } else if (char === '{' || char === '[') {
      if (++depth > maxDepth) return true
    } else if (char === '}' || char === ']') {
      depth--
    }
  }
  return false
}

/**
 * Reads a JSON request body with a size bound, refusing other media types,
 * bodies larger than `maxBytes` (413, read no further) and documents nested
 * deeper than MAX_JSON_DEPTH.
 */
export async function readJson (ctx: Context, maxBytes = MAX_JSON_BODY_BYTES): Promise<unknown> {
  if (!ctx.is('application/json')) throw new UnsupportedMediaTypeError('the body must be application/json')
  const declared = Number(ctx.get('content-length'))
  if (Number.isFinite(declared) && declared > maxBytes) throw new PayloadTooLargeError(`the body is larger than ${maxBytes} bytes`)
  const parts: Buffer[] = []
  let received = 0
  for await (const part of ctx.req as AsyncIterable<Buffer>) {
    received += part.byteLength
    if (received > maxBytes) {
      ctx.req.destroy()
      throw new PayloadTooLargeError(`the body is larger than ${maxBytes} bytes`)
    }
    parts.push(part)
  }
  const text = Buffer.concat(parts).toString('utf8')
  if (text.trim() === '') throw new ValidationError('the body is empty')
  if (exceedsDepth(text, MAX_JSON_DEPTH)) throw new ValidationError(`the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`)
  try {
    return JSON.parse(text)
  } catch (error) {
    throw new ValidationError(`the body is not valid JSON: ${(error as Error).message}`)
  }
}
