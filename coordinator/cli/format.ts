/** Human-readable output of the CLI. */
import { escapeControlCharacters } from '../../protocol/text.js'

/**
 * Text from the coordinator made safe for a terminal: host names, messages and
 * names come from devices and people, and a control character in them would
 * clear the screen, recolour text or forge a row. `keep` lists characters left
 * as they are (`\n` in a block of lines).
 */
export function printable (text: string, keep = ''): string {
  return escapeControlCharacters(text, keep)
}

export function formatBytes (bytes: number): string {
  if (!Number.isFinite(bytes)) return '-'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`
}

export function formatDuration (ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  const seconds = ms / 1000
  if (seconds < 120) return `${seconds.toFixed(1)} s`
  const minutes = Math.floor(seconds / 60)
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`
}

/** Shortens a long id for a table; the full id stays available with --json. */
export function shortId (id: string, length = 12): string {
  return id.length > length ? id.slice(0, length) : id
}

/** Renders rows as an aligned table with a header line. */
export function table (headers: string[], rows: Array<Array<string | number | undefined | null>>): string {
  const cells = rows.map(row => row.map(cell => cell === undefined || cell === null ? '-' : printable(String(cell))))
  const widths = headers.map((header, column) => Math.max(header.length, ...cells.map(row => row[column]?.length ?? 0)))
  const line = (row: string[]): string => row.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd()
  return [line(headers), ...cells.map(line)].join('\n') + '\n'
}

/** A one-line text progress bar. */
export function bar (fraction: number, width = 24): string {
  const clamped = Math.max(0, Math.min(1, fraction))
  const filled = Math.round(clamped * width)
  return '█'.repeat(filled) + '░'.repeat(width - filled)
}
