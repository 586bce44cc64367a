/** What a group commit flushes at once: the jobs gathered while the previous flush ran. */
export type FlushGroup<Job> = (jobs: Job[]) => Promise<void>

export interface GroupCommitInit<Job> {
  /** Writes the jobs in one durable write; resolves once they are on disk. */
  flush: FlushGroup<Job>
  /** The job's weight against `maxWeightPerFlush` (operations, records). @default 1 */
  weightOf?: (job: Job) => number
  /** Weight flushed at once at most; a heavier job goes alone. @default Infinity */
  maxWeightPerFlush?: number
  /**
   * When a flush of several jobs fails: flush each alone, so that one job's
   * bad write fails only its own caller. Off: every job of the group fails.
   * @default true
   */
  isolateFailures?: boolean
}

interface Pending<Job> {
  job: Job
  resolve: () => void
  reject: (error: unknown) => void
}

/**
 * Group commit: callers that arrive while one durable write is being flushed
 * gather for the next, and one flush (one fsync) serves them all. Each
 * caller's job stays whole and in arrival order; `commit` resolves once its
 * job is durable. Used by the store's writes and by the status ingest, whose
 * flush reads, merges and writes many callers' records at once.
 */
export class GroupCommit<Job> {
  private readonly flush: FlushGroup<Job>
  private readonly weightOf: (job: Job) => number
  private readonly maxWeightPerFlush: number
  private readonly isolateFailures: boolean
  private readonly queue: Array<Pending<Job>> = []
  private draining?: Promise<void>

  constructor (init: GroupCommitInit<Job>) {
    this.flush = init.flush
    this.weightOf = init.weightOf ?? (() => 1)
    this.maxWeightPerFlush = init.maxWeightPerFlush ?? Number.POSITIVE_INFINITY
    this.isolateFailures = init.isolateFailures ?? true
  }

  /** Jobs waiting for a flush (not counting the one being flushed). */
  get waiting (): number {
    return this.queue.length
  }

  /** Queues a job for the next flush; resolves once it is durable. */
  async commit (job: Job): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.queue.push({ job, resolve, reject })
      this.draining ??= this.drain()
    })
  }

  /** Resolves when every job queued so far has been flushed (or has failed). */
  async idle (): Promise<void> {
    while (this.draining !== undefined) await this.draining
  }

  private take (): Array<Pending<Job>> {
    const group: Array<Pending<Job>> = []
    let weight = 0
    while (this.queue.length > 0) {
      const next = this.weightOf(this.queue[0].job)
      if (group.length > 0 && weight + next > this.maxWeightPerFlush) break
      group.push(this.queue.shift()!)
      weight += next
    }
    return group
  }

  private async drain (): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const group = this.take()
        try {
          await this.flush(group.map(pending => pending.job))
          for (const pending of group) pending.resolve()
        } catch (error) {
          if (group.length === 1 || !this.isolateFailures) {
            for (const pending of group) pending.reject(error)
            continue
          }
          // One caller's bad job must not fail the others: each goes alone.
          for (const pending of group) await this.flush([pending.job]).then(pending.resolve, pending.reject)
        }
      }
    } finally {
      this.draining = undefined
    }
  }
}
