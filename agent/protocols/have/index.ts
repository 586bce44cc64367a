import type { AbortOptions, Stream } from '@libp2p/interface'
import { FrameReader, asError, encodeFrame } from '../frames.js'
import { DEFAULT_HAVE_BATCH_MS, MAX_BUFFER_BYTES, MAX_MESSAGE_BYTES, MAX_QUEUED_MESSAGES, WRITE_TIMEOUT_MS } from './constants.js'
import { HaveQueueFullError } from './errors.js'
import { MAX_HAVES_PER_MESSAGE, decodeHaveMessage, encodeHaveMessage, type HaveMessage } from './messages.js'

export * from './constants.js'
export * from './errors.js'
export * from './messages.js'

/**
 * The `have`s of one batching interval, by package: taken as one message
 * per package (a lone chunk as a plain `have`), each chunk once.
 */
export class HaveBatch {
  private readonly pending = new Map<string, Set<number>>()

  add (packageId: string, index: number): void {
    let indices = this.pending.get(packageId)
    if (indices === undefined) {
      indices = new Set()
      this.pending.set(packageId, indices)
    }
    indices.add(index)
  }

  get empty (): boolean {
    return this.pending.size === 0
  }

  take (): HaveMessage[] {
    const out: HaveMessage[] = []
    for (const [packageId, set] of this.pending) {
      const indices = [...set]
      if (indices.length === 1) {
        out.push({ type: 'have', packageId, index: indices[0] })
        continue
      }
      for (let at = 0; at < indices.length; at += MAX_HAVES_PER_MESSAGE) out.push({ type: 'haves', packageId, indices: indices.slice(at, at + MAX_HAVES_PER_MESSAGE) })
    }
    this.pending.clear()
    return out
  }
}

export interface HaveSenderInit {
  /** How long `have`s wait to go out together; 0: each at once. @default DEFAULT_HAVE_BATCH_MS */
  batchMs?: number
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
  private readonly batchMs: number
  private readonly batch = new HaveBatch()
  private batchTimer?: NodeJS.Timeout
  private writing = false
  private drained?: Promise<void>
  private failed?: Error

  constructor (stream: Stream, init: HaveSenderInit = {}) {
    this.stream = stream
    this.batchMs = init.batchMs ?? DEFAULT_HAVE_BATCH_MS
    this.maxQueued = init.maxQueuedMessages ?? MAX_QUEUED_MESSAGES
    this.writeTimeoutMs = init.writeTimeoutMs ?? WRITE_TIMEOUT_MS
    if (init.onError !== undefined) this.onError = init.onError
  }

  get closed (): boolean {
    return this.failed !== undefined
  }

  /** Queues a message; `have`s wait for the batch, and any other message sends the batch ahead of itself so the order holds. */
  send (message: HaveMessage): void {
    if (this.failed !== undefined) return
    if (message.type === 'have' && this.batchMs > 0) {
      this.batch.add(message.packageId, message.index)
      if (this.batchTimer === undefined) {
        this.batchTimer = setTimeout(() => { this.flush() }, this.batchMs)
        this.batchTimer.unref()
      }
      return
    }
    this.flush()
    this.enqueue(message)
  }

  /** Sends the batched `have`s now. */
  flush (): void {
    if (this.batchTimer !== undefined) clearTimeout(this.batchTimer)
    this.batchTimer = undefined
    if (this.batch.empty) return
    for (const message of this.batch.take()) this.enqueue(message)
  }

  private enqueue (message: HaveMessage): void {
    if (this.failed !== undefined) return
    if (this.queue.length >= this.maxQueued) {
      this.fail(new HaveQueueFullError(this.queue.length))
      return
    }
    this.queue.push(message)
    if (this.writing) return
    this.writing = true
    this.drained = this.drain()
  }

  private async drain (): Promise<void> {
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
    if (this.batchTimer !== undefined) clearTimeout(this.batchTimer)
    this.batchTimer = undefined
    this.batch.take()
    this.queue.length = 0
    this.stream.abort(error)
    this.onError?.(error)
  }

  /** Sends what is batched and queued, then closes this side. */
  async close (options?: AbortOptions): Promise<void> {
    if (this.failed !== undefined) return
    this.flush()
    await this.drained
    if (this.failed !== undefined) return
    this.failed = new Error('closed')
    await this.stream.close(options).catch(() => { this.stream.abort(new Error('closed')) })
  }
}

/**
 * Reads a peer's announcements until it closes its side. Every frame is
 * bounded and decoded strictly; a malformed one ends the channel with the
 * decoding error. A `haves` batch is handed on as its single `have`s.
 */
export async function readHaveMessages (stream: Stream, onMessage: (message: HaveMessage) => void, options?: AbortOptions): Promise<void> {
  const reader = new FrameReader(stream, { maxFrameBytes: MAX_MESSAGE_BYTES, maxBufferBytes: MAX_BUFFER_BYTES })
  for (;;) {
    const frame = await reader.read(options)
    if (frame === null) return
    const message = decodeHaveMessage(frame)
    if (message.type === 'haves') {
      for (const index of message.indices) onMessage({ type: 'have', packageId: message.packageId, index })
    } else {
      onMessage(message)
    }
  }
}
