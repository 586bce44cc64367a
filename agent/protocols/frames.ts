import { byteStream, type ByteStream } from '@libp2p/utils'
import type { AbortOptions, MessageStream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { MeshdeployError } from '../../protocol/errors.js'

/** A frame longer than the protocol allows. */
export class FrameTooLargeError extends MeshdeployError {
  readonly lengthBytes: number
  readonly maxBytes: number
  constructor (lengthBytes: number, maxBytes: number) {
    super(`a frame of ${lengthBytes} bytes exceeds the limit of ${maxBytes}`, 'frame-too-large')
    this.name = 'FrameTooLargeError'
    this.lengthBytes = lengthBytes
    this.maxBytes = maxBytes
  }
}

/** The stream ended inside a frame. */
export class TruncatedFrameError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'truncated-frame')
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

/** The stream was reset (by the remote, or aborted here) rather than closed: whatever was cut off is not the peer's statement. */
export class StreamResetError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'stream-reset')
    this.name = 'StreamResetError'
  }
}

/**
 * Splits bytes into length-prefixed frames with a bound on their size. Pure:
 * bytes go in with `push`, whole frames come out of `next`. The length is
 * checked as soon as its prefix is complete, before any of the frame is
 * awaited, so a prefix claiming gigabytes costs only its own few bytes.
 */
export class FrameDecoder {
  private readonly buffer = new Uint8ArrayList()
  readonly maxFrameBytes: number

  constructor (init: { maxFrameBytes: number }) {
    this.maxFrameBytes = init.maxFrameBytes
  }

  /** Bytes received and not yet returned as a frame. */
  get bufferedBytes (): number {
    return this.buffer.byteLength
  }

  push (bytes: Uint8Array | Uint8ArrayList): void {
    this.buffer.append(bytes)
  }

  /** The next whole frame, or undefined until more bytes arrive; throws FrameTooLargeError. */
  next (): Uint8ArrayList | undefined {
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

  /** The input ended: throws TruncatedFrameError if it ended inside a frame. */
  end (): void {
    if (this.buffer.byteLength > 0) throw new TruncatedFrameError(`the stream ended inside a frame (${this.buffer.byteLength} bytes buffered)`)
  }
}

/**
 * Reads length-prefixed frames from a stream with a bound on their size.
 * Unlike lpStream it tells a clean end of stream (null, on a frame boundary)
 * from a truncated frame (TruncatedFrameError) and from a reset stream
 * (StreamResetError), and checks the length before it buffers the frame.
 */
export class FrameReader {
  private readonly stream: MessageStream
  private readonly bytes: ByteStream<MessageStream>
  private readonly decoder: FrameDecoder

  constructor (stream: MessageStream, init: { maxFrameBytes: number, maxBufferBytes?: number }) {
    this.stream = stream
    this.decoder = new FrameDecoder(init)
    this.bytes = byteStream(stream, { maxBufferSize: init.maxBufferBytes ?? 2 * init.maxFrameBytes + 64 })
  }

  /** The next frame, or null when the remote closed its side between frames. */
  async read (options?: AbortOptions): Promise<Uint8ArrayList | null> {
    for (;;) {
      const frame = this.decoder.next()
      if (frame !== undefined) return frame
      const more = await this.bytes.read(options)
      if (more === null) {
        // A reset stream reads as an end too: only its status tells them apart.
        if (this.stream.status === 'reset' || this.stream.status === 'aborted') throw new StreamResetError(`the stream was ${this.stream.status} (${this.decoder.bufferedBytes} bytes of a frame buffered)`)
        this.decoder.end()
        return null
      }
      this.decoder.push(more)
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
