import type { CounterSample } from './rates.js'

/** Per-device receive rates are sampled this often. */
export const DEFAULT_SAMPLE_INTERVAL_MS = 250

export interface CounterSamplerInit {
  /** Reads each counter once; keys name what is counted (a host's received bytes, a WAN's). */
  read: () => Record<string, { rxBytes: number, txBytes: number, rxPackets?: number }>
  /** @default DEFAULT_SAMPLE_INTERVAL_MS */
  intervalMs?: number
  /** @default Date.now */
  now?: () => number
}

/**
 * Reads interface counters at a fixed interval while a phase runs, and keeps
 * every reading: received and sent bytes per key.
 */
export class CounterSampler {
  readonly rx = new Map<string, CounterSample[]>()
  readonly tx = new Map<string, CounterSample[]>()
  /** Received packets, where the reader counts them. */
  readonly rxPackets = new Map<string, CounterSample[]>()
  private readonly init: CounterSamplerInit
  private readonly now: () => number
  private timer?: NodeJS.Timeout

  constructor (init: CounterSamplerInit) {
    this.init = init
    this.now = init.now ?? Date.now
  }

  start (): void {
    this.sample()
    this.timer = setInterval(() => { this.sample() }, this.init.intervalMs ?? DEFAULT_SAMPLE_INTERVAL_MS)
  }

  /** Takes a last reading and stops. */
  stop (): void {
    if (this.timer === undefined) return
    clearInterval(this.timer)
    this.timer = undefined
    this.sample()
  }

  sample (): void {
    const atMs = this.now()
    let readings: Record<string, { rxBytes: number, txBytes: number, rxPackets?: number }>
    try {
      readings = this.init.read()
    } catch {
      // A namespace torn down under a failing run: the run reports its own error.
      return
    }
    for (const [key, counters] of Object.entries(readings)) {
      push(this.rx, key, { atMs, bytes: counters.rxBytes })
      push(this.tx, key, { atMs, bytes: counters.txBytes })
      if (counters.rxPackets !== undefined) push(this.rxPackets, key, { atMs, bytes: counters.rxPackets })
    }
  }
}

function push (map: Map<string, CounterSample[]>, key: string, sample: CounterSample): void {
  const list = map.get(key)
  if (list === undefined) map.set(key, [sample])
  else list.push(sample)
}
