import type { IncomingMessage } from 'node:http'
import type { Context } from 'koa'
import { MAX_JSON_BODY_BYTES } from '../../protocol/index.js'
import { ApiError, PayloadTooLargeError, RequestTimeoutError, UnsupportedMediaTypeError, ValidationError } from '../errors.js'
import { refuseControlCharacters } from '../validation.js'
import { DEFAULT_BODY_IDLE_TIMEOUT_MS, DEFAULT_JSON_BODY_TIMEOUT_MS } from './request-limits.js'

/** Deepest nesting accepted in a JSON body; deeper documents are refused before parsing. */
export const MAX_JSON_DEPTH = 32

/** Whether JSON text nests objects and arrays deeper than `maxDepth`; brackets inside strings do not count. */
export function exceedsDepth (text: string, maxDepth: number): boolean {
  let depth = 0
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index)
    if (code === 0x22) {
      // A string: jump to its closing quote, one not escaped by an odd run of backslashes.
      for (;;) {
        const quote = text.indexOf('"', index + 1)
        if (quote === -1) return false
        index = quote
        let backslashes = 0
        while (text.charCodeAt(quote - 1 - backslashes) === 0x5c) backslashes++
        if (backslashes % 2 === 0) break
      }
    } else if (code === 0x7b || code === 0x5b) {
      if (++depth > maxDepth) return true
    } else if (code === 0x7d || code === 0x5d) {
      depth--
    }
  }
  return false
}

export interface ReadBodyOptions {
  /** @default MAX_JSON_BODY_BYTES */
  maxBytes?: number
  /** Longest pause between two pieces of the body. @default DEFAULT_BODY_IDLE_TIMEOUT_MS */
  idleTimeoutMs?: number
  /** Longest time for the whole body. @default DEFAULT_JSON_BODY_TIMEOUT_MS */
  totalTimeoutMs?: number
}

/**
 * Reads a whole request body with a size bound and two clocks: one re-armed
 * by every piece (a client that stalls) and one for the whole body (a client
 * that dribbles). Past either the answer is 408 and the connection closes.
 */
export async function readBody (request: IncomingMessage, options: ReadBodyOptions = {}): Promise<Buffer> {
  const maxBytes = options.maxBytes ?? MAX_JSON_BODY_BYTES
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_BODY_IDLE_TIMEOUT_MS
  const totalTimeoutMs = options.totalTimeoutMs ?? DEFAULT_JSON_BODY_TIMEOUT_MS
  return await new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = []
    let received = 0
    let idle: NodeJS.Timeout | undefined
    const finish = (error?: Error): void => {
      clearTimeout(idle)
      clearTimeout(total)
      request.off('data', onData)
      request.off('end', onEnd)
      request.off('error', onError)
      request.off('aborted', onAborted)
      // Stop reading: the rest of an oversized or stalled body is never pulled in; the connection closes after the answer.
      if (error !== undefined) {
        request.pause()
        reject(error)
      } else {
        resolve(Buffer.concat(parts))
      }
    }
    const arm = (): void => {
      clearTimeout(idle)
      idle = setTimeout(() => { finish(new RequestTimeoutError(`the body stalled for more than ${idleTimeoutMs} ms`)) }, idleTimeoutMs)
    }
    const total = setTimeout(() => { finish(new RequestTimeoutError(`the body took longer than ${totalTimeoutMs} ms`)) }, totalTimeoutMs)
    const onData = (piece: Buffer): void => {
      received += piece.byteLength
      if (received > maxBytes) {
        finish(new PayloadTooLargeError(`the body is larger than ${maxBytes} bytes`))
        return
      }
      parts.push(piece)
      arm()
    }
    const onEnd = (): void => { finish() }
    const onError = (error: Error): void => { finish(new ApiError(400, 'aborted', `the body could not be read: ${error.message}`)) }
    const onAborted = (): void => { finish(new ApiError(400, 'aborted', 'the client closed the request')) }
    request.on('data', onData)
    request.on('end', onEnd)
    request.on('error', onError)
    request.on('aborted', onAborted)
    arm()
  })
}

/**
 * Reads a JSON request body with a size bound, refusing other media types,
 * bodies larger than `maxBytes` (413, read no further), slow bodies (408) and
 * documents nested deeper than MAX_JSON_DEPTH.
 */
export async function readJson (ctx: Context, options: ReadBodyOptions = {}): Promise<unknown> {
  const maxBytes = options.maxBytes ?? MAX_JSON_BODY_BYTES
  if (!ctx.is('application/json')) throw new UnsupportedMediaTypeError('the body must be application/json')
  const declared = Number(ctx.get('content-length'))
  if (Number.isFinite(declared) && declared > maxBytes) {
    ctx.set('Connection', 'close')
    throw new PayloadTooLargeError(`the body is larger than ${maxBytes} bytes`)
  }
  let raw: Buffer
  try {
    raw = await readBody(ctx.req, { ...options, maxBytes })
  } catch (error) {
    ctx.set('Connection', 'close')
    throw error
  }
  const text = raw.toString('utf8')
  if (text.trim() === '') throw new ValidationError('the body is empty')
  if (exceedsDepth(text, MAX_JSON_DEPTH)) throw new ApiError(400, 'too-deep', `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`)
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    throw new ApiError(400, 'invalid-json', `the body is not valid JSON: ${(error as Error).message}`)
  }
  refuseControlCharacters(parsed)
  return parsed
}

