import { MIB } from '../../protocol/index.js'
import { MeshdeployError } from '../../protocol/errors.js'

/** A buffer was given back to the pool while it was already there: two owners would write into it. */
export class BufferReleasedTwiceError extends MeshdeployError {
  constructor () {
    super('a buffer was released to the pool twice', 'buffer-released-twice')
    this.name = 'BufferReleasedTwiceError'
  }
}

export interface BufferPoolInit {
  /** Bytes of free buffers the pool keeps for reuse; buffers released beyond it are left to the collector. @default 16 MiB */
  maxFreeBytes?: number
  /** Smallest buffer the pool hands out; smaller requests get one of this size. @default 64 KiB */
  minBufferBytes?: number
  /** Largest buffer the pool keeps; larger requests get a buffer of their own, never reused. @default 16 MiB */
  maxBufferBytes?: number
}

export const DEFAULT_MAX_FREE_BYTES = 4 * MIB
const DEFAULT_MIN_BUFFER_BYTES = 64 * 1024
const DEFAULT_MAX_BUFFER_BYTES = 16 * MIB

/**
 * Chunk-sized buffers reused from one chunk to the next, so that receiving a
 * package does not allocate (and the collector free) a fresh megabyte per
 * chunk. Buffers come in powers of two; `acquire` returns a view of exactly
 * the length asked for, `release` takes any view of a pooled buffer back.
 * Not zero-filled: the caller writes every byte it reads.
 */
export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>()
  private readonly freeSet = new Set<ArrayBuffer>()
  private readonly owned = new WeakSet<ArrayBuffer>()
  private freeBytes = 0
  private readonly maxFreeBytes: number
  private readonly minBufferBytes: number
  private readonly maxBufferBytes: number
  /** Buffers allocated because none was free (for tests and metrics). */
  allocations = 0

  constructor (init: BufferPoolInit = {}) {
    this.maxFreeBytes = init.maxFreeBytes ?? DEFAULT_MAX_FREE_BYTES
    this.minBufferBytes = init.minBufferBytes ?? DEFAULT_MIN_BUFFER_BYTES
    this.maxBufferBytes = init.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES
  }

  /** Bytes held free for reuse. */
  get freeBufferBytes (): number {
    return this.freeBytes
  }

  private sizeClassOf (lengthBytes: number): number {
    let size = this.minBufferBytes
    while (size < lengthBytes) size *= 2
    return size
  }

  /** A buffer of `lengthBytes` (contents undefined). */
  acquire (lengthBytes: number): Buffer {
    if (!Number.isInteger(lengthBytes) || lengthBytes < 0) throw new RangeError(`cannot take a buffer of ${lengthBytes} bytes`)
    if (lengthBytes > this.maxBufferBytes) return Buffer.allocUnsafeSlow(lengthBytes)
    const size = this.sizeClassOf(lengthBytes)
    const reused = this.free.get(size)?.pop()
    if (reused !== undefined) {
      this.freeSet.delete(reused)
      this.freeBytes -= size
      return Buffer.from(reused, 0, lengthBytes)
    }
    this.allocations++
    const fresh = new ArrayBuffer(size)
    this.owned.add(fresh)
    return Buffer.from(fresh, 0, lengthBytes)
  }

  /**
   * Gives a buffer back for reuse. Views of buffers the pool did not hand
   * out are ignored. The caller must hold no other reference to it that is
   * still read or written.
   */
  release (bytes: Uint8Array): void {
    const buffer = bytes.buffer
    if (!(buffer instanceof ArrayBuffer) || !this.owned.has(buffer)) return
    if (this.freeSet.has(buffer)) throw new BufferReleasedTwiceError()
    if (this.freeBytes + buffer.byteLength > this.maxFreeBytes) {
      // Beyond the bound: forgotten, so that a later release of it is no double release.
      this.owned.delete(buffer)
      return
    }
    const list = this.free.get(buffer.byteLength) ?? []
    list.push(buffer)
    this.free.set(buffer.byteLength, list)
    this.freeSet.add(buffer)
    this.freeBytes += buffer.byteLength
  }

  /** Whether these bytes are a view of a buffer this pool handed out and may take back. */
  owns (bytes: Uint8Array): boolean {
    return bytes.buffer instanceof ArrayBuffer && this.owned.has(bytes.buffer)
  }
}
