/** Chunks whose bytes stream from the origin at once, per agent. */
export const DEFAULT_ORIGIN_STREAMS = 1
/**
 * A chunk with this little left to arrive (and at most a quarter of it) no
 * longer holds its lane: the next request crosses the WAN meanwhile.
 */
export const DEFAULT_ORIGIN_OVERLAP_BYTES = 256 * 1024

export interface OriginLanesInit {
  /** Chunks receiving bytes at once. @default DEFAULT_ORIGIN_STREAMS */
  streams?: number
  /** Bytes left to arrive under which a chunk frees its lane early. @default DEFAULT_ORIGIN_OVERLAP_BYTES */
  overlapBytes?: number
}

/** A chunk's place in a lane: it tells how many bytes are left, and lets go. */
export interface OriginLane {
  /** Bytes still to arrive of `lengthBytes`; at or under the overlap the lane is freed for the next chunk. */
  remaining: (bytes: number, lengthBytes: number) => void
  release: () => void
}

/**
 * Keeps an agent's origin chunks streaming one after another rather than
 * side by side: the site's WAN is shared by its fetchers either way, but an
 * agent that is killed mid-fetch then loses the half of one chunk, not the
 * halves of every chunk it had asked for. The next chunk is requested while
 * the current one has its last `overlapBytes` to go, so no round trip is
 * left idle between chunks. Waiting chunks are served in the order they came.
 */
export class OriginLanes {
  private readonly streams: number
  private readonly overlapBytes: number
  private busy = 0
  private readonly waiting: Array<{ grant: () => void }> = []

  constructor (init: OriginLanesInit = {}) {
    this.streams = Math.max(1, init.streams ?? DEFAULT_ORIGIN_STREAMS)
    this.overlapBytes = Math.max(0, init.overlapBytes ?? DEFAULT_ORIGIN_OVERLAP_BYTES)
  }

  /** Chunks holding a lane now. */
  get streaming (): number {
    return this.busy
  }

  /** Chunks waiting for a lane. */
  get queued (): number {
    return this.waiting.length
  }

  /** Waits for a lane; the signal's abort takes the chunk out of the queue. */
  async acquire (signal: AbortSignal): Promise<OriginLane> {
    signal.throwIfAborted()
    if (this.busy < this.streams) {
      this.busy++
      return this.lane()
    }
    return await new Promise<OriginLane>((resolve, reject) => {
      const entry = {
        grant: () => {
          signal.removeEventListener('abort', onAbort)
          this.busy++
          resolve(this.lane())
        }
      }
      const onAbort = (): void => {
        const at = this.waiting.indexOf(entry)
        if (at >= 0) this.waiting.splice(at, 1)
        reject(signal.reason)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiting.push(entry)
    })
  }

  private lane (): OriginLane {
    let held = true
    const free = (): void => {
      if (!held) return
      held = false
      this.busy--
      this.waiting.shift()?.grant()
    }
    return {
      // At most a quarter of the chunk: with small chunks, the next one must not start as soon as this one does.
      remaining: (bytes, lengthBytes) => { if (bytes <= Math.min(this.overlapBytes, lengthBytes / 4)) free() },
      release: free
    }
  }
}
