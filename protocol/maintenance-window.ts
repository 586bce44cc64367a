import { z } from 'zod'
import { openEnvelope, sealEnvelope, type KeyResolver, type SignedEnvelope, type SigningKey } from './envelope.js'
import { MalformedError } from './errors.js'
import { utf8 } from './encoding.js'
import { parseJsonPayload } from './json-payload.js'
import { KIB } from './limits.js'
import { MAX_ONE_OFF_WINDOW_MINUTES, MAX_RECURRING_WINDOW_MINUTES, WEEKDAYS, isTimeZone } from './window-schedule.js'

export const MAINTENANCE_WINDOWS_DOMAIN = 'meshdeploy/maintenance-windows/v1'
/** Windows that may apply to one device (its own, its site's, its groups'). */
export const MAX_WINDOWS_PER_DEVICE = 200
export const MAX_WINDOW_SET_BYTES = 256 * KIB

/** What a task does with the maintenance windows of its devices. */
export const WINDOW_POLICIES = ['respect', 'ignore'] as const
export type WindowPolicy = typeof WINDOW_POLICIES[number]

export const timeOfDaySchema = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be a time of day HH:MM (24-hour clock)')
export const calendarDateSchema = z.string().regex(/^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/, 'must be a date YYYY-MM-DD')
export const timeZoneSchema = z.string().min(1).max(64).refine(isTimeZone, 'must be an IANA time zone such as Europe/Berlin')

/**
 * When a window opens, as the device evaluates it: recurring (days of the
 * week) or one-off (a date), a start time, a duration, and a zone (absent:
 * the device's own). Fields are checked together by `checkWindowTimes`.
 */
export const windowTimesSchema = z.object({
  /** Recurring: the days it opens on. */
  days: z.array(z.enum(WEEKDAYS)).min(1).max(7).optional(),
  /** One-off: the date it opens on. */
  date: calendarDateSchema.optional(),
  /** Opening time in the window's zone. */
  start: timeOfDaySchema,
  /** How long it stays open (elapsed time; may reach past midnight). */
  durationMinutes: z.number().int().min(1).max(MAX_ONE_OFF_WINDOW_MINUTES),
  /** IANA time zone; absent: the device's own zone. */
  timeZone: timeZoneSchema.optional()
})

type WindowTimesInput = z.infer<typeof windowTimesSchema>

/** The problems of a window's times taken together, as (path, message) pairs; empty when it is sound. */
export function windowTimesProblems (times: Partial<WindowTimesInput>): Array<{ path: string, message: string }> {
  const problems: Array<{ path: string, message: string }> = []
  if ((times.days === undefined) === (times.date === undefined)) {
    problems.push({ path: 'days', message: 'give days (a recurring window) or date (a one-off window), one of the two' })
  }
  if (times.days !== undefined && times.durationMinutes !== undefined && times.durationMinutes > MAX_RECURRING_WINDOW_MINUTES) {
    problems.push({ path: 'durationMinutes', message: `a recurring window lasts a week (${MAX_RECURRING_WINDOW_MINUTES} minutes) at most` })
  }
  if (times.days !== undefined && new Set(times.days).size !== times.days.length) problems.push({ path: 'days', message: 'a day is named twice' })
  return problems
}

export const windowRuleSchema = windowTimesSchema.extend({
  id: z.string().min(1).max(100),
  name: z.string().min(1).max(200)
}).strict().superRefine((rule, context) => {
  for (const problem of windowTimesProblems(rule)) context.addIssue({ code: 'custom', path: [problem.path], message: problem.message })
})

export type WindowRule = z.infer<typeof windowRuleSchema>

/**
 * The windows that apply to one device, signed by the coordinator: those of
 * its site, of its groups and its own. `revision` grows with every change of
 * any window; an agent refuses a set older than the one it holds.
 */
export const windowSetSchema = z.object({
  type: z.literal('meshdeploy.maintenance-windows'),
  revision: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  issuedAt: z.iso.datetime({ offset: true }),
  windows: z.array(windowRuleSchema).max(MAX_WINDOWS_PER_DEVICE)
}).strict()

export type WindowSet = z.infer<typeof windowSetSchema>

export function signWindowSet (set: WindowSet, key: SigningKey): SignedEnvelope {
  const parsed = windowSetSchema.safeParse(set)
  if (!parsed.success) throw new MalformedError(`maintenance windows: ${z.prettifyError(parsed.error)}`)
  return sealEnvelope(MAINTENANCE_WINDOWS_DOMAIN, utf8(JSON.stringify(parsed.data)), key)
}

/** Verifies a window set against the coordinator's keys and decodes it; throws the named envelope errors or MalformedError. */
export function openWindowSet (envelope: unknown, keys: KeyResolver): WindowSet {
  const opened = openEnvelope(envelope, { domain: MAINTENANCE_WINDOWS_DOMAIN, keys, maxPayloadBytes: MAX_WINDOW_SET_BYTES })
  return parseJsonPayload(opened.payload, windowSetSchema, 'maintenance windows')
}
