import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import { basename } from 'node:path'
import { randomBytes } from 'node:crypto'
import { StringDecoder } from 'node:string_decoder'
import { setTimeout as sleep } from 'node:timers/promises'
import { PROBLEM_CONTENT_TYPE, createHttpsAgent, trustFailureOf, type Problem, type TlsTrust } from '../../protocol/index.js'
import { SseParser, type SseMessage } from '../events/sse.js'

/** An error answer of the API, with its problem details. */
export class ApiRequestError extends Error {
  readonly status: number
  readonly problem?: Problem
  constructor (status: number, message: string, problem?: Problem) {
    super(message)
    this.name = 'ApiRequestError'
    this.status = status
    if (problem !== undefined) this.problem = problem
  }
}

export interface ApiClientInit {
  url: string
  token?: string
  /** @default 60000 */
  timeoutMs?: number
  /** How the coordinator's HTTPS certificate is trusted: a CA, a pinned fingerprint, or the system's CAs. */
  tls?: TlsTrust
  /**
   * For answers shown to people: every string of a JSON answer passes through
   * it before the caller sees it (the CLI escapes control characters there).
   * @default strings as they came
   */
  shownText?: (text: string) => string
}

type Json = any

/** Every string of a parsed JSON value (keys aside) passed through `change`. */
function mapStrings (value: Json, change: (text: string) => string): Json {
  if (typeof value === 'string') return change(value)
  if (Array.isArray(value)) return value.map(item => mapStrings(item, change))
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([key, inner]) => [change(key), mapStrings(inner, change)]))
  return value
}

/** Reads refused with 429 are tried this often in all, each after the coordinator's Retry-After (at most 10 s). */
const MAX_READ_ATTEMPTS = 3
const MAX_RETRY_AFTER_MS = 10_000

export interface EventStreamOptions {
  /** Resume after this event id (sent as Last-Event-ID). */
  lastEventId?: string
  signal: AbortSignal
  onMessage: (message: SseMessage) => void
  /** Comments, such as the coordinator's heartbeats. */
  onComment?: (text: string) => void
  /** Called once the coordinator has accepted the stream. */
  onOpen?: () => void
}

/** The operator's client of the coordinator API, used by the CLI and the demo. */
export class ApiClient {
  readonly baseUrl: URL
  private readonly token?: string
  private readonly timeoutMs: number
  private readonly agent: http.Agent
  private readonly shownText?: (text: string) => string

  constructor (init: ApiClientInit) {
    this.baseUrl = new URL(init.url)
    if (init.token !== undefined) this.token = init.token
    if (init.shownText !== undefined) this.shownText = init.shownText
    this.timeoutMs = init.timeoutMs ?? 60_000
    this.agent = this.baseUrl.protocol === 'https:' ? createHttpsAgent(init.tls ?? {}, { keepAlive: true }) : new http.Agent({ keepAlive: true })
  }

  close (): void {
    this.agent.destroy()
  }

  async get (path: string): Promise<Json> {
    return await this.request('GET', path)
  }

  /**
   * Every item of a paged listing (`limit` and `cursor`, answers with
   * `nextCursor`), read page by page; stops at `maxItems` when given.
   */
  async getEvery (path: string, key: string, options: { pageSize?: number, maxItems?: number } = {}): Promise<Json[]> {
    const items: Json[] = []
    const maxItems = options.maxItems ?? Number.POSITIVE_INFINITY
    let cursor: string | undefined
    do {
      const url = new URL(path, 'http://listing.invalid')
      url.searchParams.set('limit', String(Math.max(1, Math.min(options.pageSize ?? 5000, maxItems - items.length))))
      if (cursor !== undefined) url.searchParams.set('cursor', cursor)
      const page = await this.get(`${url.pathname}${url.search}`)
      for (const item of page[key] as Json[]) if (items.length < maxItems) items.push(item)
      cursor = page.nextCursor
    } while (cursor !== undefined && items.length < maxItems)
    return items
  }

  async post (path: string, body?: unknown): Promise<Json> {
    return await this.request('POST', path, body)
  }

  async patch (path: string, body: unknown): Promise<Json> {
    return await this.request('PATCH', path, body)
  }

  async delete (path: string): Promise<Json> {
    return await this.request('DELETE', path)
  }

  private headers (extra: Record<string, string> = {}): Record<string, string> {
    const headers: Record<string, string> = { accept: 'application/json', ...extra }
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`
    return headers
  }

  /** A GET whose answer is text (the Prometheus metrics). */
  async getText (path: string): Promise<string> {
    const { status, text, contentType } = await this.send('GET', path, this.headers({ accept: 'text/plain, application/json' }), request => { request.end() }, this.timeoutMs)
    if (status >= 200 && status < 300) return text
    return this.decode('GET', path, status, text, contentType)
  }

  /** A GET of bytes (content from the origin), at most `maxBytes`, with progress. */
  async getBytes (path: string, maxBytes: number, onData?: (bytes: number) => void): Promise<Buffer> {
    const url = new URL(path, this.baseUrl)
    const transport = url.protocol === 'https:' ? https : http
    return await new Promise((resolve, reject) => {
      const request = transport.request(url, { method: 'GET', headers: this.headers({ accept: 'application/octet-stream' }), agent: this.agent, signal: AbortSignal.timeout(this.timeoutMs) }, response => {
        const parts: Buffer[] = []
        let received = 0
        response.on('data', (part: Buffer) => {
          received += part.byteLength
          if (received > maxBytes) {
            response.destroy(new Error(`${url.pathname} answered more than ${maxBytes} bytes`))
            return
          }
          parts.push(part)
          onData?.(part.byteLength)
        })
        response.on('end', () => {
          const body = Buffer.concat(parts)
          const status = response.statusCode ?? 0
          if (status >= 200 && status < 300) resolve(body)
          else {
            try {
              this.decode('GET', path, status, body.toString('utf8'), response.headers['content-type'])
            } catch (error) {
              reject(error)
            }
          }
        })
        response.on('error', reject)
      })
      request.on('error', error => { reject(new Error(`cannot reach the coordinator at ${url.origin}: ${error.message}`)) })
      request.end()
    })
  }

  async request (method: string, path: string, body?: unknown): Promise<Json> {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    const headers = this.headers(data === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(data.byteLength) })
    for (let attempt = 1; ; attempt++) {
      const { status, text, contentType, retryAfter } = await this.send(method, path, headers, request => { request.end(data) }, this.timeoutMs)
      // A read that hit the rate limit is asked again after the wait the coordinator names; a change is never repeated.
      if (status === 429 && method === 'GET' && attempt < MAX_READ_ATTEMPTS) {
        const seconds = Number(retryAfter)
        await sleep(Math.min(MAX_RETRY_AFTER_MS, Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : 1000))
        continue
      }
      return this.decode(method, path, status, text, contentType)
    }
  }

  private decode (method: string, path: string, status: number, text: string, contentType: string | undefined): Json {
    if (status >= 200 && status < 300) {
      if (text === '') return {}
      const value = JSON.parse(text)
      return this.shownText === undefined ? value : mapStrings(value, this.shownText)
    }
    if (contentType?.startsWith(PROBLEM_CONTENT_TYPE) === true) {
      const problem = JSON.parse(text) as Problem
      throw new ApiRequestError(status, `${problem.title}: ${problem.detail ?? problem.reason}`, problem)
    }
    throw new ApiRequestError(status, `${method} ${path} answered HTTP ${status}`)
  }

  private async send (method: string, path: string, headers: Record<string, string>, write: (request: http.ClientRequest) => void, timeoutMs: number): Promise<{ status: number, text: string, contentType: string | undefined, retryAfter?: string }> {
    const url = new URL(path, this.baseUrl)
    const transport = url.protocol === 'https:' ? https : http
    return await new Promise((resolve, reject) => {
      const request = transport.request(url, { method, headers, agent: this.agent, signal: AbortSignal.timeout(timeoutMs) }, response => {
        const parts: Buffer[] = []
        response.on('data', (part: Buffer) => { parts.push(part) })
        response.on('end', () => {
          const retryAfter = response.headers['retry-after']
          resolve({ status: response.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8'), contentType: response.headers['content-type'], ...(retryAfter !== undefined ? { retryAfter } : {}) })
        })
        response.on('error', reject)
      })
      request.on('error', error => {
        const untrusted = trustFailureOf(error)
        if (untrusted !== undefined) {
          reject(untrusted)
          return
        }
        reject((error as Error).name === 'AbortError' || (error as Error).name === 'TimeoutError'
          ? new Error(`${method} ${url.pathname} timed out after ${timeoutMs} ms`)
          : new Error(`cannot reach the coordinator at ${url.origin}: ${error.message}`))
      })
      write(request)
    })
  }

  /**
   * Reads a server-sent event stream (GET) until the coordinator ends it or
   * `signal` aborts; an error answer throws like any other request.
   */
  async streamEvents (path: string, options: EventStreamOptions): Promise<void> {
    const url = new URL(path, this.baseUrl)
    const transport = url.protocol === 'https:' ? https : http
    const headers = this.headers({ accept: 'text/event-stream' })
    if (options.lastEventId !== undefined) headers['last-event-id'] = options.lastEventId
    await new Promise<void>((resolve, reject) => {
      const request = transport.request(url, { method: 'GET', headers, agent: this.agent, signal: options.signal }, response => {
        const status = response.statusCode ?? 0
        if (status !== 200) {
          const parts: Buffer[] = []
          let size = 0
          response.on('data', (part: Buffer) => { if ((size += part.byteLength) <= 64 * 1024) parts.push(part) })
          response.on('end', () => {
            try {
              this.decode('GET', path, status, Buffer.concat(parts).toString('utf8'), response.headers['content-type'])
              reject(new ApiRequestError(status, `GET ${path} answered HTTP ${status}`))
            } catch (error) {
              reject(error)
            }
          })
          response.on('error', reject)
          return
        }
        options.onOpen?.()
        const decoder = new StringDecoder('utf8')
        const parser = new SseParser({ onMessage: options.onMessage, ...(options.onComment !== undefined ? { onComment: options.onComment } : {}) })
        response.on('data', (part: Buffer) => {
          try {
            parser.push(decoder.write(part))
          } catch (error) {
            response.destroy(error as Error)
          }
        })
        response.on('end', () => { resolve() })
        response.on('error', reject)
        response.on('close', () => { if (!response.complete) reject(new Error(`the event stream from ${url.origin} was cut`)) })
      })
      request.on('error', error => {
        const untrusted = trustFailureOf(error)
        if (untrusted !== undefined) reject(untrusted)
        else reject((error as Error).name === 'AbortError' ? error : new Error(`cannot reach the coordinator at ${url.origin}: ${error.message}`))
      })
      request.end()
    })
  }

  /**
   * Uploads a package file as a streamed multipart body; `onProgress` sees
   * the bytes sent so far.
   */
  async uploadPackage (file: string, metadata: Record<string, unknown>, onProgress?: (sentBytes: number, totalBytes: number) => void): Promise<Json> {
    const size = (await stat(file)).size
    const boundary = `meshdeploy-${randomBytes(12).toString('hex')}`
    const name = basename(file).replace(/["\r\n]/g, '_')
    const head = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="metadata"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(metadata)}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`
    )
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`)
    const headers = this.headers({ 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(head.byteLength + size + tail.byteLength) })
    const { status, text, contentType } = await this.send('POST', '/v1/packages', headers, request => {
      request.write(head)
      let sent = 0
      const stream = createReadStream(file, { highWaterMark: 1024 * 1024 })
      stream.on('data', chunk => {
        sent += chunk.length
        onProgress?.(sent, size)
        if (!request.write(chunk)) {
          stream.pause()
          request.once('drain', () => stream.resume())
        }
      })
      stream.on('end', () => { request.end(tail) })
      stream.on('error', error => { request.destroy(error) })
      request.on('close', () => { stream.destroy() })
    }, 24 * 3600 * 1000)
    return this.decode('POST', '/v1/packages', status, text, contentType)
  }
}
