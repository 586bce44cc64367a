/** What an installer's exit code means. */
export type ExitOutcome = 'success' | 'success-reboot-required' | 'success-reboot-started' | 'retry' | 'failure'

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

export function exitOutcome (exitCode: number | null, overrides: Readonly<Record<number, ExitOutcome>> = {}): ExitOutcome {
  if (exitCode === null) return 'failure'
  return overrides[exitCode] ?? DEFAULT_EXIT_CODES[exitCode] ?? 'failure'
}
