/** Largest piece a capped transfer asks for at once. */
export const MAX_BURST_BYTES = 64 * 1024
/**
 * Tokens beyond a piece that a bucket keeps: what the rate brings in the
 * slack of a timer (a timer fires a millisecond or so late; at high rates a
 * piece takes about as long), so that grants keep up with the rate.
 */
const TIMER_SLACK_MS = 10
/** The span over which the bytes that crossed the wire never exceed the cap. */
export const DEFAULT_WINDOW_MS = 1000
/**
 * Share of a cap left to what carries the payload on the wire: TCP/IP and
 * link headers of the segments received (2–3 %) and the acknowledgements
 * of what the device sends meanwhile. A cap is the interface's rate, not the
 * application's.
 */
export const DEFAULT_WIRE_OVERHEAD = 0.04
/** Granularity of the arrival record: a window counts whole slots, so it errs on the safe side by at most one slot. */
const SLOT_MS = 10

/** Cancels a scheduled call. */
export type CancelTimer = () => void
/** Runs `run` after `ms`; injected so that tests drive time. */
export type ScheduleTimer = (ms: number, run: () => void) => CancelTimer

export interface TokenBucketInit {
  /** The cap, in bytes per second on the wire. */
  bytesPerSecond: number
  /**
   * Bytes that may be granted at once after an idle spell. Kept to a
   * twentieth of a second's worth; the pieces asked for are no larger than
   * this and 64 KiB. @default min(payload rate / 20, min(64 KiB, payload rate / 20) + 10 ms of the payload rate)
   */
  burstBytes?: number
  /** @default DEFAULT_WINDOW_MS */
  windowMs?: number
  /** @default DEFAULT_WIRE_OVERHEAD */
  wireOverhead?: number
  /** @default Date.now */
  now?: () => number
  /** @default setTimeout */
  schedule?: ScheduleTimer
}

/** A grant that was given up before it was used: the caller asked for nothing with it. */
export class GrantCancelledError extends Error {
  constructor () {
    super('the bandwidth grant was cancelled')
    this.name = 'GrantCancelledError'
  }
}

/**
 * The right to move some bytes. It waits in the bucket's queue until
 * `granted` resolves; from then its bytes count as in flight until they
 * arrive (`arrived`, as they come) or the transfer ends (`finish`: whatever
 * did not arrive counts as arrived now, for it may still be on the wire).
 * `cancel` gives up a grant whose bytes were never asked for.
 */
export class Grant {
  readonly bytes: number
  readonly granted: Promise<void>
  /** Bytes of the grant not yet seen arriving. */
  private remaining: number
  /** queued → in-flight → done */
  state: 'queued' | 'in-flight' | 'done' = 'queued'
  private resolve!: () => void
  private reject!: (reason: unknown) => void
  private readonly bucket: TokenBucket
  private readonly signal?: AbortSignal
  private readonly onAbort = (): void => { this.bucket.dequeue(this, this.signal?.reason) }

  constructor (bucket: TokenBucket, bytes: number, signal?: AbortSignal) {
    this.bucket = bucket
    this.bytes = bytes
    this.remaining = bytes
    this.granted = new Promise<void>((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
    // A caller that cancels or fails before awaiting must not leave an unhandled rejection behind.
    this.granted.catch(() => {})
    if (signal !== undefined) {
      this.signal = signal
      signal.addEventListener('abort', this.onAbort, { once: true })
    }
  }

  /** Bytes of this grant seen arriving. */
  readonly arrived = (bytes: number): void => {
    if (this.state !== 'in-flight') {
      // Bytes of a finished transfer still count against the window.
      if (this.state === 'done') this.bucket.recordArrival(bytes, 0)
      return
    }
    const counted = Math.min(bytes, this.remaining)
    this.remaining -= counted
    this.bucket.recordArrival(bytes, counted)
  }

  /** The transfer ended (done, failed or aborted): bytes not seen arriving count as arrived now. */
  finish (): void {
    if (this.state === 'queued') {
      this.cancel()
      return
    }
    if (this.state !== 'in-flight') return
    this.state = 'done'
    const rest = this.remaining
    this.remaining = 0
    this.bucket.recordArrival(rest, rest)
  }

  /** Nothing was asked with this grant: its tokens and its place go back. */
  cancel (): void {
    if (this.state === 'queued') {
      this.bucket.dequeue(this, new GrantCancelledError())
      return
    }
    if (this.state !== 'in-flight') return
    this.state = 'done'
    this.bucket.giveBack(this.bytes, this.remaining)
    this.remaining = 0
  }

  /** Called by the bucket. */
  settle (error?: unknown): void {
    this.signal?.removeEventListener('abort', this.onAbort)
    if (error !== undefined) {
      this.state = 'done'
      this.reject(error)
    } else {
      this.state = 'in-flight'
      this.resolve()
    }
  }
}

/**
 * Paces bytes to a cap so that it holds on the wire: over any window of
 * `windowMs`, the bytes that arrived never exceed the cap.
 *
 * Two rules grant bytes, in arrival order of the requests:
 * - a token bucket at the payload rate (the cap less the wire overhead)
 *   spaces grants evenly; its tokens never go into debt and refill no more
 *   than a burst, so after a stall (a busy process whose timers fire late)
 *   grants do not catch up;
 * - bytes are paced where they arrive, not where they are asked for: a grant
 *   is given only while the bytes that arrived in the last window and the
 *   bytes granted and not yet arrived fit in a window's budget. A peer that
 *   stalls and then answers every request at once cannot push a window over
 *   the budget and one request, for whatever it answers was counted in
 *   flight.
 */
export class TokenBucket {
  /** The cap on the wire. */
  readonly bytesPerSecond: number
  /** What the payload may use of it. */
  readonly payloadBytesPerSecond: number
  readonly burstBytes: number
  /** Largest piece a caller should ask for at once: a request never outruns the bucket by more than a burst. */
  readonly pieceBytes: number
  readonly windowMs: number
  /** Payload bytes a window may carry. */
  readonly windowBudgetBytes: number
  private readonly now: () => number
  private readonly schedule: ScheduleTimer
  private tokens: number
  private updatedAt: number
  private readonly slots: Float64Array
  /** Absolute number of the newest slot (time ÷ SLOT_MS). */
  private newestSlot: number
  private windowBytes = 0
  private inFlight = 0
  private readonly queue: Grant[] = []
  private cancelTimer?: CancelTimer

  constructor (init: TokenBucketInit) {
    if (!(init.bytesPerSecond > 0)) throw new RangeError('the rate must be positive')
    const overhead = init.wireOverhead ?? DEFAULT_WIRE_OVERHEAD
    if (!(overhead >= 0)) throw new RangeError('the wire overhead must be 0 or more')
    this.bytesPerSecond = init.bytesPerSecond
    this.payloadBytesPerSecond = init.bytesPerSecond / (1 + overhead)
    const twentieth = this.payloadBytesPerSecond / 20
    this.burstBytes = Math.max(1, Math.floor(init.burstBytes ?? Math.min(twentieth, Math.min(MAX_BURST_BYTES, twentieth) + this.payloadBytesPerSecond * TIMER_SLACK_MS / 1000)))
    this.pieceBytes = Math.max(1, Math.min(MAX_BURST_BYTES, this.burstBytes, Math.floor(twentieth)))
    this.windowMs = Math.max(SLOT_MS, init.windowMs ?? DEFAULT_WINDOW_MS)
    this.windowBudgetBytes = this.payloadBytesPerSecond * this.windowMs / 1000
    this.now = init.now ?? Date.now
    this.schedule = init.schedule ?? ((ms, run) => {
      const timer = setTimeout(run, ms)
      return () => { clearTimeout(timer) }
    })
    this.tokens = this.burstBytes
    this.updatedAt = this.now()
    this.slots = new Float64Array(Math.ceil(this.windowMs / SLOT_MS) + 1)
    this.newestSlot = Math.floor(this.updatedAt / SLOT_MS)
  }


  /** Bytes granted and not yet arrived. */
  get inFlightBytes (): number {
    return this.inFlight
  }

  /** Bytes counted as arrived within the current window (whole slots: at most one slot more than the exact window). */
  get arrivedInWindowBytes (): number {
    this.advanceSlots()
    return this.windowBytes
  }

  /** Requests waiting for a grant. */
  get waiting (): number {
    return this.queue.length
  }

  private refill (): void {
    const now = this.now()
    const elapsedMs = Math.max(0, now - this.updatedAt)
    this.updatedAt = now
    this.tokens = Math.min(this.burstBytes, this.tokens + elapsedMs * this.payloadBytesPerSecond / 1000)
  }

  /**
   * The arithmetic of the rate alone, for models that compute transfer times
   * rather than wait: takes `bytes` (the bucket may go into debt) and
   * returns the milliseconds to wait before using them.
   */
  reserve (bytes: number): number {
    this.refill()
    this.tokens -= bytes
    if (this.tokens >= 0) return 0
    return Math.ceil(-this.tokens * 1000 / this.payloadBytesPerSecond)
  }

  /** Gives back tokens of `reserve` that were not used. */
  refund (bytes: number): void {
    this.refill()
    this.tokens = Math.min(this.burstBytes, this.tokens + bytes)
  }

  /** Asks for the right to move `bytes`; the grant waits in the queue until `granted` resolves (or rejects with the signal's reason). */
  acquire (bytes: number, signal?: AbortSignal): Grant {
    const grant = new Grant(this, Math.max(0, bytes), signal)
    if (signal?.aborted === true) {
      grant.settle(signal.reason)
      return grant
    }
    this.queue.push(grant)
    if (this.queue.length === 1) this.pump()
    return grant
  }

  private advanceSlots (): void {
    const current = Math.floor(this.now() / SLOT_MS)
    if (current <= this.newestSlot) return
    const count = this.slots.length
    if (current - this.newestSlot >= count) {
      this.slots.fill(0)
      this.windowBytes = 0
    } else {
      for (let slot = this.newestSlot + 1; slot <= current; slot++) {
        const index = slot % count
        this.windowBytes -= this.slots[index]
        this.slots[index] = 0
      }
      if (this.windowBytes < 1e-6) this.windowBytes = 0
    }
    this.newestSlot = current
  }

  /**
   * How long the head of the queue, asking for `bytes`, must wait: 0 to go
   * now, a number of milliseconds, or undefined when only an arrival or a
   * finished transfer can make room.
   */
  waitMs (bytes: number): number | undefined {
    this.refill()
    this.advanceSlots()
    const needTokens = Math.min(bytes, this.burstBytes)
    const tokenWaitMs = this.tokens >= needTokens ? 0 : Math.ceil((needTokens - this.tokens) * 1000 / this.payloadBytesPerSecond)
    // Its own bytes are not counted: a window may carry its budget and one request more, the price of not idling below the rate.
    const excess = this.windowBytes + this.inFlight - this.windowBudgetBytes
    if (excess <= 0) return tokenWaitMs
    if (this.inFlight > this.windowBudgetBytes) return undefined
    // The oldest slots leave the window first: wait until enough of them have.
    const count = this.slots.length
    let freed = 0
    for (let slot = this.newestSlot - count + 1; slot <= this.newestSlot; slot++) {
      freed += this.slots[((slot % count) + count) % count]
      if (freed >= excess - 1e-6) return Math.max(tokenWaitMs, (slot + count) * SLOT_MS - this.now())
    }
    return undefined
  }

  /** Grants what the rules allow now, and arms one timer for the next head. */
  private pump (): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
    while (this.queue.length > 0) {
      const head = this.queue[0]
      const wait = this.waitMs(head.bytes)
      if (wait === undefined) return
      if (wait > 0) {
        this.cancelTimer = this.schedule(wait, () => {
          this.cancelTimer = undefined
          this.pump()
        })
        return
      }
      this.queue.shift()
      this.tokens -= head.bytes
      this.inFlight += head.bytes
      head.settle()
    }
  }

  /** Called by grants. */
  recordArrival (bytes: number, fromInFlight: number): void {
    if (bytes <= 0) return
    this.advanceSlots()
    this.slots[this.newestSlot % this.slots.length] += bytes
    this.windowBytes += bytes
    this.inFlight = Math.max(0, this.inFlight - fromInFlight)
    if (fromInFlight > 0 && this.queue.length > 0 && this.cancelTimer === undefined) this.pump()
  }

  /** Called by grants: a grant never used gives back its tokens and its bytes in flight. */
  giveBack (tokens: number, inFlight: number): void {
    this.refill()
    this.tokens = Math.min(this.burstBytes, this.tokens + tokens)
    this.inFlight = Math.max(0, this.inFlight - inFlight)
    if (this.queue.length > 0) this.pump()
  }

  /** Called by grants: leaves the queue, rejecting with `reason`. */
  dequeue (grant: Grant, reason: unknown): void {
    const index = this.queue.indexOf(grant)
    if (index < 0) return
    this.queue.splice(index, 1)
    grant.settle(reason ?? new GrantCancelledError())
    if (index === 0) this.pump()
  }
}

/**
 * Waits for the right to send `bytes` at once (a write: they are on the wire
 * as soon as they are written), cancellable.
 */
export async function take (bucket: TokenBucket, bytes: number, signal?: AbortSignal): Promise<void> {
  const grant = bucket.acquire(bytes, signal)
  await grant.granted
  grant.finish()
}
