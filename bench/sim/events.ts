/**
 * A discrete-event queue in virtual time: events run in time order (ties
 * in the order they were scheduled), and `now` is the time of the event
 * running. Nothing waits on a real clock.
 */
export class EventQueue {
  private readonly heap: Array<{ at: number, seq: number, run: () => void }> = []
  private seq = 0
  now = 0
  processed = 0

  /** Runs `run` at virtual time `at` (not before now). */
  at (at: number, run: () => void): void {
    this.heap.push({ at: Math.max(at, this.now), seq: this.seq++, run })
    this.up(this.heap.length - 1)
  }

  after (delayMs: number, run: () => void): void {
    this.at(this.now + delayMs, run)
  }

  get size (): number {
    return this.heap.length
  }

  /** Runs events until none is left, `until` passes or `stop` says so. */
  run (until = Number.POSITIVE_INFINITY, stop: () => boolean = () => false): void {
    while (this.heap.length > 0 && !stop()) {
      const next = this.pop()
      if (next.at > until) {
        this.heap.push(next)
        this.up(this.heap.length - 1)
        return
      }
      this.now = next.at
      this.processed++
      next.run()
    }
  }

  private less (a: number, b: number): boolean {
    const x = this.heap[a]
    const y = this.heap[b]
    return x.at < y.at || (x.at === y.at && x.seq < y.seq)
  }

  private swap (a: number, b: number): void {
    const item = this.heap[a]
    this.heap[a] = this.heap[b]
    this.heap[b] = item
  }

  private up (index: number): void {
    while (index > 0) {
      const parent = (index - 1) >> 1
      if (!this.less(index, parent)) return
      this.swap(index, parent)
      index = parent
    }
  }

  private pop (): { at: number, seq: number, run: () => void } {
    const top = this.heap[0]
    const last = this.heap.pop()!
    if (this.heap.length > 0) {
      this.heap[0] = last
      let index = 0
      for (;;) {
        const left = 2 * index + 1
        const right = left + 1
        let smallest = index
        if (left < this.heap.length && this.less(left, smallest)) smallest = left
        if (right < this.heap.length && this.less(right, smallest)) smallest = right
        if (smallest === index) break
        this.swap(index, smallest)
        index = smallest
      }
    }
    return top
  }
}
