import type { AbortOptions, Stream } from '@libp2p/interface'
import { FrameReader, asError, encodeFrame } from '../frames.js'
import { MAX_BUFFER_BYTES, MAX_MESSAGE_BYTES, MAX_QUEUED_MESSAGES, WRITE_TIMEOUT_MS } from './constants.js'
import { HaveQueueFullError } from './errors.js'
import { decodeHaveMessage, encodeHaveMessage, type HaveMessage } from './messages.js'

export * from './constants.js'
export * from './errors.js'
export * from './messages.js'

export interface HaveSenderInit {
  /** @default MAX_QUEUED_MESSAGES */
  maxQueuedMessages?: number
  /** @default WRITE_TIMEOUT_MS */
  writeTimeoutMs?: number
  /** Called once when the channel fails; the caller drops it. */
  onError?: (error: Error) => void
}

/**
 * The writing end of one peer's announcement channel: messages queue in
 * order and are written one after another, each within a timeout. A peer
 * that stops reading overflows the bounded queue and the channel is dropped.
 */
export class HaveSender {
  private readonly stream: Stream
  private readonly queue: HaveMessage[] = []
  private readonly maxQueued: number
  private readonly writeTimeoutMs: number
  private readonly onError?: (error: Error) => void
  private writing = false
  private failed?: Error

  constructor (stream: Stream, init: HaveSenderInit = {}) {
    this.stream = stream
    this.maxQueued = init.maxQueuedMessages ?? MAX_QUEUED_MESSAGES
    this.writeTimeoutMs = init.writeTimeoutMs ?? WRITE_TIMEOUT_MS
    if (init.onError !== undefined) this.onError = init.onError
  }

  get closed (): boolean {
    return this.failed !== undefined
  }

  send (message: HaveMessage): void {
    if (this.failed !== undefined) return
    if (this.queue.length >= this.maxQueued) {
      this.fail(new HaveQueueFullError(this.queue.length))
      return
    }
    this.queue.push(message)
    if (!this.writing) void this.drain()
  }

  private async drain (): Promise<void> {
    this.writing = true
    try {
      while (this.queue.length > 0 && this.failed === undefined) {
        // Consecutive messages go out in one write.
        const batch = this.queue.splice(0, 256).map(message => encodeFrame(encodeHaveMessage(message)))
        const bytes = batch.length === 1 ? batch[0] : batch.reduce((all, frame) => { all.append(frame); return all })
        if (!this.stream.send(bytes)) await this.stream.onDrain({ signal: AbortSignal.timeout(this.writeTimeoutMs) })
      }
    } catch (error) {
      this.fail(asError(error))
    } finally {
      this.writing = false
    }
  }

  private fail (error: Error): void {
    if (this.failed !== undefined) return
    this.failed = error
    this.queue.length = 0
    this.stream.abort(error)
    this.onError?.(error)
  }

  async close (options?: AbortOptions): Promise<void> {
    if (this.failed !== undefined) return
    this.failed = new Error('closed')
    await this.stream.close(options).catch(() => { this.stream.abort(new Error('closed')) })
  }
}

/**
 * Reads a peer's announcements until it closes its side. Every frame is
 * bounded and decoded strictly; a malformed one ends the channel with the
 * decoding error.
 */
export async function readHaveMessages (stream: Stream, onMessage: (message: HaveMessage) => void, options?: AbortOptions): Promise<void> {
  const reader = new FrameReader(stream, { maxFrameBytes: MAX_MESSAGE_BYTES, maxBufferBytes: MAX_BUFFER_BYTES })
  for (;;) {
    const frame = await reader.read(options)
    if (frame === null) return
    onMessage(decodeHaveMessage(frame))
  }
}
