/** A reading of a byte counter (an interface's received or sent bytes) at a moment, by the bench's clock. */
export interface CounterSample {
  atMs: number
  bytes: number
}

export interface CounterRates {
  /** Bytes counted between the two moments. */
  totalBytes: number
  averageBytesPerSecond: number
  /** The fastest span of at least `windowMs`, in bytes per second; 0 when the interval is shorter than a window. */
  worstWindowBytesPerSecond: number
}

/** The counter's value at a moment, interpolated between the readings around it. */
export function counterAt (samples: readonly CounterSample[], atMs: number): number {
  if (samples.length === 0) return 0
  if (atMs <= samples[0].atMs) return samples[0].bytes
  for (let i = 1; i < samples.length; i++) {
    const after = samples[i]
    if (after.atMs < atMs) continue
    const before = samples[i - 1]
    const span = after.atMs - before.atMs
    return span === 0 ? after.bytes : before.bytes + (after.bytes - before.bytes) * (atMs - before.atMs) / span
  }
  return samples[samples.length - 1].bytes
}

/**
 * Average and worst window of a counter between two moments. Readings come
 * every few hundred milliseconds (later under load), so a window runs from
 * one reading to the first that is at least `windowMs` later, and its rate
 * is bytes ÷ its actual span: a late reading lengthens the window rather
 * than inflating the rate.
 */
export function counterRates (samples: readonly CounterSample[], fromMs: number, toMs: number, windowMs = 1000): CounterRates {
  const totalBytes = counterAt(samples, toMs) - counterAt(samples, fromMs)
  const seconds = (toMs - fromMs) / 1000
  const inside = samples.filter(sample => sample.atMs >= fromMs && sample.atMs <= toMs)
  let worst = 0
  let j = 0
  for (let i = 0; i < inside.length; i++) {
    if (j <= i) j = i + 1
    while (j < inside.length && inside[j].atMs - inside[i].atMs < windowMs) j++
    if (j >= inside.length) break
    const rate = (inside[j].bytes - inside[i].bytes) / ((inside[j].atMs - inside[i].atMs) / 1000)
    if (rate > worst) worst = rate
  }
  return { totalBytes, averageBytesPerSecond: seconds > 0 ? totalBytes / seconds : 0, worstWindowBytesPerSecond: worst }
}

/** Rate between consecutive readings, for charts: [seconds since `originMs`, bytes per second]. */
export function rateSeries (samples: readonly CounterSample[], originMs: number): Array<{ seconds: number, bytesPerSecond: number }> {
  const out: Array<{ seconds: number, bytesPerSecond: number }> = []
  for (let i = 1; i < samples.length; i++) {
    const spanMs = samples[i].atMs - samples[i - 1].atMs
    if (spanMs <= 0) continue
    out.push({ seconds: (samples[i].atMs - originMs) / 1000, bytesPerSecond: (samples[i].bytes - samples[i - 1].bytes) / (spanMs / 1000) })
  }
  return out
}

/** The q-quantile (0..1) by linear interpolation between order statistics (R-7, what spreadsheets compute). */
export function quantile (values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const position = (sorted.length - 1) * q
  const below = Math.floor(position)
  const above = Math.ceil(position)
  return sorted[below] + (sorted[above] - sorted[below]) * (position - below)
}

/** Points of an empirical CDF: the k-th fastest of n values reaches k ÷ n. */
export function cdfPoints (values: readonly number[]): Array<{ value: number, fraction: number }> {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.map((value, index) => ({ value, fraction: (index + 1) / sorted.length }))
}
