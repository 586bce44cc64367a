import type { Command } from 'commander'
import { WEEKDAYS, type Weekday } from '../../protocol/index.js'
import { list, UsageError } from './context.js'

const NAMED_DAYS: Record<string, readonly Weekday[]> = {
  daily: WEEKDAYS,
  weekdays: ['mon', 'tue', 'wed', 'thu', 'fri'],
  weekends: ['sat', 'sun']
}

/**
 * Days as operators write them: `mon-fri`, `sat,sun`, `fri-mon` (wrapping
 * past Sunday), `daily`, `weekdays`, `weekends`; in week order, each once.
 */
export function parseDays (text: string): Weekday[] {
  const chosen = new Set<Weekday>()
  const dayOf = (name: string): Weekday => {
    const day = WEEKDAYS.find(candidate => candidate === name.trim().toLowerCase().slice(0, 3))
    if (day === undefined || name.trim().length < 3) throw new UsageError(`${name} is not a day; use mon, tue, wed, thu, fri, sat, sun, ranges such as mon-fri, or daily, weekdays, weekends`)
    return day
  }
  for (const part of text.split(',').map(item => item.trim().toLowerCase()).filter(item => item !== '')) {
    const named = NAMED_DAYS[part]
    if (named !== undefined) {
      for (const day of named) chosen.add(day)
      continue
    }
    const [from, to] = part.split('-')
    if (to === undefined) {
      chosen.add(dayOf(from))
      continue
    }
    let index = WEEKDAYS.indexOf(dayOf(from))
    const last = WEEKDAYS.indexOf(dayOf(to))
    for (;;) {
      chosen.add(WEEKDAYS[index])
      if (index === last) break
      index = (index + 1) % 7
    }
  }
  if (chosen.size === 0) throw new UsageError('name at least one day')
  return WEEKDAYS.filter(day => chosen.has(day))
}

/** A duration in minutes from `90`, `90m`, `4h`, `1h30m`, `2d`. */
export function parseDurationMinutes (text: string): number {
  const trimmed = text.trim().toLowerCase()
  if (/^\d+$/.test(trimmed)) return Number(trimmed)
  const parts = [...trimmed.matchAll(/(\d+)\s*([dhm])/g)]
  if (parts.length === 0 || parts.map(part => part[0]).join('') !== trimmed.replace(/\s+/g, '')) {
    throw new UsageError(`${text} is not a duration; use minutes (90) or units such as 4h, 1h30m, 2d`)
  }
  const unit: Record<string, number> = { d: 24 * 60, h: 60, m: 1 }
  return parts.reduce((minutes, part) => minutes + Number(part[1]) * unit[part[2]], 0)
}

/** Options that describe a maintenance window; shared by `window add` and `window edit`. */
export function withWindowOptions (command: Command): Command {
  return command
    .option('--sites <names>', 'the devices of these sites, comma separated', list)
    .option('--groups <names>', 'the devices in these groups, comma separated', list)
    .option('--devices <ids>', 'these devices, by id or host name, comma separated', list)
    .option('--days <days>', 'recurring: mon-fri, sat,sun, fri-mon, daily, weekdays, weekends', parseDays)
    .option('--date <YYYY-MM-DD>', 'one-off: the date it opens')
    .option('--start <HH:MM>', 'opening time, 24-hour clock, in the window\'s zone')
    .option('--duration <time>', 'how long it stays open: minutes (240) or 4h, 1h30m, 2d; it may reach past midnight', parseDurationMinutes)
    .option('--time-zone <zone>', 'IANA zone such as Europe/Berlin; default (or "device" in an edit): each device\'s own zone')
    .option('--description <text>', 'what the window is for')
}

/** The request fields the options set; in an edit, `--time-zone device` removes the zone. */
export function windowFieldsFrom (options: Record<string, any>, forEdit: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = {}
  const plain: Record<string, string> = { sites: 'sites', groups: 'groups', devices: 'deviceIds', days: 'days', date: 'date', start: 'start', duration: 'durationMinutes', description: 'description' }
  for (const [option, field] of Object.entries(plain)) if (options[option] !== undefined) body[field] = options[option]
  if (options.timeZone !== undefined) {
    if (options.timeZone === 'device' || options.timeZone === 'local') {
      if (forEdit) body.timeZone = null
    } else {
      body.timeZone = options.timeZone
    }
  }
  if (options.days !== undefined && options.date !== undefined) throw new UsageError('give --days (recurring) or --date (one-off), not both')
  return body
}
