import { byteStream, type ByteStream } from '@libp2p/utils'
import type { AbortOptions, MessageStream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

/** A frame longer than the protocol allows. */
export class FrameTooLargeError extends Error {
  readonly lengthBytes: number
  readonly maxBytes: number
  constructor (lengthBytes: number, maxBytes: number) {
    super(`a frame of ${lengthBytes} bytes exceeds the limit of ${maxBytes}`)
    this.name = 'FrameTooLargeError'
    this.lengthBytes = lengthBytes
    this.maxBytes = maxBytes
  }
}

/** The stream ended inside a frame. */
export class TruncatedFrameError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'TruncatedFrameError'
  }
}

/** Bytes of the longest varint a 32-bit frame length needs. */
const MAX_LENGTH_BYTES = 5

/** An unsigned LEB128 varint, the length prefix libp2p protocols use. */
export function encodeVarint (value: number): Uint8Array {
  const out: number[] = []
  let rest = value
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80)
    rest = Math.floor(rest / 0x80)
  }
  out.push(rest)
  return Uint8Array.from(out)
}

/** Prefixes a payload with its length as an unsigned varint. */
export function encodeFrame (payload: Uint8Array | Uint8ArrayList): Uint8ArrayList {
  return new Uint8ArrayList(encodeVarint(payload.byteLength), payload)
}

/**
 * Reads length-prefixed frames with a bound on their size. Unlike lpStream
 * it tells a clean end of stream (null, on a frame boundary) from a
 * truncated frame (TruncatedFrameError), and checks the length before it
 * buffers the frame.
 */
export class FrameReader {
  private readonly bytes: ByteStream<MessageStream>
  private readonly buffer = new Uint8ArrayList()
  private readonly maxFrameBytes: number

  constructor (stream: MessageStream, init: { maxFrameBytes: number, maxBufferBytes?: number }) {
    this.maxFrameBytes = init.maxFrameBytes
    this.bytes = byteStream(stream, { maxBufferSize: init.maxBufferBytes ?? 2 * init.maxFrameBytes + 64 })
  }

  private decode (): Uint8ArrayList | undefined {
    let length = 0
    let index = 0
    for (;; index++) {
      if (index >= this.buffer.byteLength) return undefined
      if (index >= MAX_LENGTH_BYTES) throw new FrameTooLargeError(Number.MAX_SAFE_INTEGER, this.maxFrameBytes)
      const byte = this.buffer.get(index)
      length += (byte & 0x7f) * 2 ** (7 * index)
      if (byte < 0x80) break
    }
    if (length > this.maxFrameBytes) throw new FrameTooLargeError(length, this.maxFrameBytes)
    const start = index + 1
    if (this.buffer.byteLength < start + length) return undefined
    const frame = this.buffer.sublist(start, start + length)
    this.buffer.consume(start + length)
    return frame
  }

  /** The next frame, or null when the remote closed its side between frames. */
  async read (options?: AbortOptions): Promise<Uint8ArrayList | null> {
    for (;;) {
      const frame = this.decode()
      if (frame !== undefined) return frame
      const more = await this.bytes.read(options)
      if (more === null) {
        if (this.buffer.byteLength === 0) return null
        throw new TruncatedFrameError(`the stream ended inside a frame (${this.buffer.byteLength} bytes buffered)`)
      }
      this.buffer.append(more)
    }
  }
}

/** Writes bytes, waiting for the stream to drain when its buffer is full. */
export async function sendBytes (stream: MessageStream, bytes: Uint8Array | Uint8ArrayList, options?: AbortOptions): Promise<void> {
  if (!stream.send(bytes)) await stream.onDrain(options)
}

/** libp2p rejects some writes with an Event rather than an Error; make it an Error. */
export function asError (reason: unknown): Error {
  if (reason instanceof Error) return reason
  const inner = (reason as { error?: unknown })?.error
  if (inner instanceof Error) return inner
  return new Error(String((reason as { type?: string })?.type ?? reason))
}
