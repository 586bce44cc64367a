import { EventEmitter } from 'node:events'

/**
 * Whether this agent currently reaches the coordinator, from the outcome of
 * its last exchange: any HTTP answer means the path works (even a refusal),
 * a connection that fails or times out means it does not. The site's relay
 * is elected among the agents that reach the coordinator.
 */
export class Reachability extends EventEmitter<{ changed: [reachable: boolean] }> {
  private current = false
  private lastSuccessMs = 0
  private lastFailureMs = 0
  private readonly now: () => number

  constructor (now: () => number = Date.now) {
    super()
    this.now = now
  }

  get reachable (): boolean {
    return this.current
  }

  get lastSuccessAt (): number {
    return this.lastSuccessMs
  }

  get lastFailureAt (): number {
    return this.lastFailureMs
  }

  succeeded (): void {
    this.lastSuccessMs = this.now()
    this.set(true)
  }

  failed (): void {
    this.lastFailureMs = this.now()
    this.set(false)
  }

  private set (reachable: boolean): void {
    if (reachable === this.current) return
    this.current = reachable
    this.emit('changed', reachable)
  }
}
