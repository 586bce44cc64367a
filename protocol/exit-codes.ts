import { z } from 'zod'

export const EXIT_OUTCOMES = ['success', 'success-reboot-required', 'success-reboot-started', 'retry', 'failure'] as const

/** What an installer's exit code means. */
export type ExitOutcome = typeof EXIT_OUTCOMES[number]

/**
 * The defaults operators of Windows installers expect: 0 and 1707 success,
 * 3010 success with a reboot required, 1641 success with a reboot started,
 * 1618 (another installation in progress) retry soon, anything else failure.
 */
export const DEFAULT_EXIT_CODES: Readonly<Record<number, ExitOutcome>> = {
  0: 'success',
  1707: 'success',
  3010: 'success-reboot-required',
  1641: 'success-reboot-started',
  1618: 'retry'
}

export const MAX_EXIT_CODE_ENTRIES = 64

/** A package's own mapping, exit code (as a decimal string, JSON keys being strings) → outcome; it overrides the defaults. */
export const exitCodeMapSchema = z.record(z.string().regex(/^-?\d{1,10}$/, 'must be a whole number'), z.enum(EXIT_OUTCOMES))
  .refine(map => Object.keys(map).length <= MAX_EXIT_CODE_ENTRIES, `at most ${MAX_EXIT_CODE_ENTRIES} exit codes`)

export type ExitCodeMap = Readonly<Record<string, ExitOutcome>>

export function exitOutcome (exitCode: number | null, overrides: ExitCodeMap = {}): ExitOutcome {
  if (exitCode === null) return 'failure'
  return overrides[String(exitCode)] ?? DEFAULT_EXIT_CODES[exitCode] ?? 'failure'
}

/** Parses `CODE=OUTCOME` pairs as operators type them (`3010=success,5=retry`). */
export function parseExitCodeMap (pairs: readonly string[]): Record<string, ExitOutcome> {
  const map: Record<string, ExitOutcome> = {}
  for (const pair of pairs.flatMap(item => item.split(','))) {
    const trimmed = pair.trim()
    if (trimmed === '') continue
    const match = /^(-?\d{1,10})\s*=\s*([a-z-]+)$/.exec(trimmed)
    if (match === null || !(EXIT_OUTCOMES as readonly string[]).includes(match[2])) {
      throw new SyntaxError(`${JSON.stringify(trimmed)} is not CODE=OUTCOME with an outcome among ${EXIT_OUTCOMES.join(', ')}`)
    }
    map[String(Number(match[1]))] = match[2] as ExitOutcome
  }
  return map
}
