/**
 * The text/event-stream wire format (WHATWG HTML, "Server-sent events"):
 * writing frames on the coordinator, reading them in the CLI.
 */

export interface SseMessage {
  /** The `event:` field; `message` when absent. */
  event: string
  data: string
  /** The `id:` field of this message, if it had one. */
  id?: string
}

/** One frame: fields, then a blank line. Data may span lines; ids and names may not. */
export function formatSseMessage (message: { event: string, data: string, id?: string | number }): string {
  const event = message.event.replace(/[\r\n]/g, '')
  let frame = message.id !== undefined ? `id: ${String(message.id).replace(/[\r\n]/g, '')}\n` : ''
  frame += `event: ${event}\n`
  for (const line of message.data.split(/\r\n|\r|\n/)) frame += `data: ${line}\n`
  return frame + '\n'
}

/** A comment line: ignored by clients, keeps proxies and idle timers from closing the stream. */
export function formatSseComment (text: string): string {
  return `: ${text.replace(/[\r\n]/g, ' ')}\n\n`
}

/** A server-sent line longer than this is refused rather than buffered. */
export const DEFAULT_MAX_SSE_LINE_CHARS = 1024 * 1024

export class SseLineTooLongError extends Error {
  readonly maxLineChars: number
  constructor (maxLineChars: number) {
    super(`an event-stream line is longer than ${maxLineChars} characters`)
    this.name = 'SseLineTooLongError'
    this.maxLineChars = maxLineChars
  }
}

export interface SseParserInit {
  onMessage: (message: SseMessage) => void
  /** Comment lines, such as heartbeats. */
  onComment?: (text: string) => void
  /** `retry:` fields, in milliseconds. */
  onRetry?: (retryMs: number) => void
  /** @default DEFAULT_MAX_SSE_LINE_CHARS */
  maxLineChars?: number
}

/** Incremental event-stream parser: feed it decoded text as it arrives. */
export class SseParser {
  private readonly init: SseParserInit
  private readonly maxLineChars: number
  private buffer = ''
  private event = ''
  private data: string[] = []
  private id: string | undefined
  private hasFields = false

  constructor (init: SseParserInit) {
    this.init = init
    this.maxLineChars = init.maxLineChars ?? DEFAULT_MAX_SSE_LINE_CHARS
  }

  push (text: string): void {
    this.buffer += text
    let start = 0
    for (;;) {
      const match = /\r\n|\r|\n/g
      match.lastIndex = start
      const found = match.exec(this.buffer)
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (found === null || (found[0] === '\r' && found.index === this.buffer.length - 1)) break
      this.line(this.buffer.slice(start, found.index))
      start = found.index + found[0].length
    }
    this.buffer = this.buffer.slice(start)
    if (this.buffer.length > this.maxLineChars) throw new SseLineTooLongError(this.maxLineChars)
  }

  private line (line: string): void {
    if (line === '') {
      this.dispatch()
      return
    }
    if (line.startsWith(':')) {
      this.init.onComment?.(line.slice(1).trimStart())
      return
    }
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'event':
        this.event = value
        this.hasFields = true
        break
      case 'data':
        this.data.push(value)
        this.hasFields = true
        break
      case 'id':
        if (!value.includes('\0')) this.id = value
        this.hasFields = true
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.init.onRetry?.(Number(value))
        break
      default:
        break
    }
  }

  private dispatch (): void {
    if (this.hasFields) {
      const message: SseMessage = { event: this.event === '' ? 'message' : this.event, data: this.data.join('\n') }
      if (this.id !== undefined) message.id = this.id
      this.init.onMessage(message)
    }
    this.event = ''
    this.data = []
    this.id = undefined
    this.hasFields = false
  }
}
