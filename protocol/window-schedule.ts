/**
 * When maintenance windows are open: pure functions of the rules, an instant
 * and a time zone, so that a table of instants is the whole test. The agent
 * evaluates them against its own clock and, for rules without a zone of
 * their own, its own time zone; the coordinator uses the same code to show
 * operators the next occurrences.
 *
 * Wall-clock times follow the zone's daylight-saving changes the way
 * calendars do (Temporal's `compatible` disambiguation): a start that falls
 * into the hour skipped in spring moves forward by the gap (02:30 becomes
 * 03:30), a start that occurs twice in autumn is the first of the two. A
 * window's duration is elapsed time: a four-hour window lasts four hours
 * even across a change.
 */

export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const
export type Weekday = typeof WEEKDAYS[number]

const MINUTE_MS = 60_000
const DAY_MS = 24 * 60 * MINUTE_MS

/** Longest recurring window: a week (a longer one would never close). */
export const MAX_RECURRING_WINDOW_MINUTES = 7 * 24 * 60
/** Longest one-off window. */
export const MAX_ONE_OFF_WINDOW_MINUTES = 31 * 24 * 60
/** How far ahead the next window is looked for. */
export const WINDOW_HORIZON_MS = 400 * DAY_MS

/** What evaluation needs of a window rule. */
export interface WindowTimes {
  /** Recurring: the days of the week it opens on (in its zone). */
  days?: readonly Weekday[]
  /** One-off: the date it opens on, YYYY-MM-DD (in its zone). */
  date?: string
  /** Opening time, HH:MM, 24-hour clock. */
  start: string
  durationMinutes: number
  /** IANA zone; absent: the device's own zone. */
  timeZone?: string
}

export interface WindowInterval {
  startMs: number
  endMs: number
}

const formatters = new Map<string, Intl.DateTimeFormat>()

function formatterOf (timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone)
  if (formatter === undefined) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric'
    })
    formatters.set(timeZone, formatter)
  }
  return formatter
}

/** Whether the runtime knows this IANA zone. */
export function isTimeZone (name: string): boolean {
  try {
    formatterOf(name)
    return true
  } catch {
    return false
  }
}

/** The zone this process runs in (the TZ variable, else the system's). */
export function localTimeZone (): string {
  return new Intl.DateTimeFormat().resolvedOptions().timeZone
}

interface LocalTime { year: number, month: number, day: number, hour: number, minute: number, second: number }

/** The wall-clock time in a zone at an instant. */
export function localTimeAt (ms: number, timeZone: string): LocalTime {
  const parts: Record<string, number> = {}
  for (const part of formatterOf(timeZone).formatToParts(new Date(ms))) {
    if (part.type !== 'literal') parts[part.type] = Number(part.value)
  }
  return { year: parts.year, month: parts.month, day: parts.day, hour: parts.hour === 24 ? 0 : parts.hour, minute: parts.minute, second: parts.second }
}

/** The zone's offset from UTC at an instant, ms (Berlin in summer: +7,200,000). */
export function offsetAt (ms: number, timeZone: string): number {
  const local = localTimeAt(ms, timeZone)
  const asUtc = Date.UTC(local.year, local.month - 1, local.day, local.hour, local.minute, local.second)
  return asUtc - Math.floor(ms / 1000) * 1000
}

/**
 * The instant a wall-clock time in a zone names. A skipped time (spring
 * forward) is read with the offset before the change, which moves it
 * forward by the gap; a repeated time (fall back) is the earlier instant.
 */
export function instantOf (year: number, month: number, day: number, hour: number, minute: number, timeZone: string): number {
  const asUtc = Date.UTC(year, month - 1, day, hour, minute)
  const before = offsetAt(asUtc - DAY_MS, timeZone)
  const after = offsetAt(asUtc + DAY_MS, timeZone)
  const candidates = [...new Set([asUtc - before, asUtc - after])]
    .filter(candidate => asUtc - offsetAt(candidate, timeZone) === candidate)
    .sort((a, b) => a - b)
  if (candidates.length > 0) return candidates[0]
  return asUtc - before
}

function parseClock (start: string): { hour: number, minute: number } {
  const match = /^(\d{2}):(\d{2})$/.exec(start)
  if (match === null) throw new RangeError(`${start} is not a time of day HH:MM`)
  return { hour: Number(match[1]), minute: Number(match[2]) }
}

function parseDate (date: string): { year: number, month: number, day: number } {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date)
  if (match === null) throw new RangeError(`${date} is not a date YYYY-MM-DD`)
  return { year: Number(match[1]), month: Number(match[2]), day: Number(match[3]) }
}

/** Occurrences of one rule that overlap [fromMs, toMs), in order. */
export function occurrencesOf (rule: WindowTimes, fromMs: number, toMs: number, deviceTimeZone: string): WindowInterval[] {
  const zone = rule.timeZone ?? deviceTimeZone
  const { hour, minute } = parseClock(rule.start)
  const durationMs = rule.durationMinutes * MINUTE_MS
  const out: WindowInterval[] = []
  if (rule.date !== undefined) {
    const { year, month, day } = parseDate(rule.date)
    const startMs = instantOf(year, month, day, hour, minute, zone)
    if (startMs < toMs && startMs + durationMs > fromMs) out.push({ startMs, endMs: startMs + durationMs })
    return out
  }
  const days = new Set(rule.days ?? [])
  if (days.size === 0) return out
  // Local dates from one that may still be open at fromMs (a window lasts a week at most) to the last that may open before toMs.
  const first = localTimeAt(fromMs - durationMs - DAY_MS, zone)
  const last = localTimeAt(toMs + DAY_MS, zone)
  const lastDay = Date.UTC(last.year, last.month - 1, last.day)
  for (let dayMs = Date.UTC(first.year, first.month - 1, first.day); dayMs <= lastDay; dayMs += DAY_MS) {
    const date = new Date(dayMs)
    if (!days.has(WEEKDAYS[date.getUTCDay()])) continue
    const startMs = instantOf(date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), hour, minute, zone)
    if (startMs < toMs && startMs + durationMs > fromMs) out.push({ startMs, endMs: startMs + durationMs })
  }
  return out
}

/** The open periods of several rules over [fromMs, toMs), overlapping and touching windows merged into one. */
export function openIntervals (rules: readonly WindowTimes[], fromMs: number, toMs: number, deviceTimeZone: string): WindowInterval[] {
  const all = rules.flatMap(rule => occurrencesOf(rule, fromMs, toMs, deviceTimeZone)).sort((a, b) => a.startMs - b.startMs)
  const merged: WindowInterval[] = []
  for (const interval of all) {
    const previous = merged[merged.length - 1]
    if (previous !== undefined && interval.startMs <= previous.endMs) previous.endMs = Math.max(previous.endMs, interval.endMs)
    else merged.push({ ...interval })
  }
  return merged
}

/** The open period that contains the instant, if a window is open then. */
export function openWindowAt (rules: readonly WindowTimes[], nowMs: number, deviceTimeZone: string): WindowInterval | undefined {
  return openIntervals(rules, nowMs, nowMs + 1, deviceTimeZone).find(interval => interval.startMs <= nowMs && nowMs < interval.endMs)
}

export interface WindowSlot {
  /** When the work may start: now, or when a window long enough opens. */
  startMs: number
  /** When that open period closes. */
  endMs: number
}

/**
 * The earliest instant from `nowMs` on at which a window is open and stays
 * open for `neededMs` more: now, if the current period is long enough;
 * otherwise the start of the first later period that is. Undefined when
 * none opens within `horizonMs` (the rules cannot fit the work).
 */
export function nextSlot (rules: readonly WindowTimes[], nowMs: number, neededMs: number, deviceTimeZone: string, horizonMs = WINDOW_HORIZON_MS): WindowSlot | undefined {
  // Searched a month at a time: most answers lie in the first.
  const stepMs = 31 * DAY_MS
  for (let fromMs = nowMs; fromMs < nowMs + horizonMs; fromMs += stepMs) {
    // Each step's range reaches past its end by the work's length, so a period that straddles two steps is seen whole.
    const intervals = openIntervals(rules, fromMs, fromMs + stepMs + neededMs, deviceTimeZone)
    // A period that began in an earlier step is looked at again: this step may have seen a window that extends it.
    for (const interval of intervals) {
      const startMs = Math.max(interval.startMs, nowMs)
      if (interval.endMs - startMs >= neededMs) return { startMs, endMs: interval.endMs }
    }
  }
  return undefined
}
