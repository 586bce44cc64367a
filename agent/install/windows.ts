import type { CommandLine } from './commands.js'
import { cmdCommand, msiUninstallCommand } from './commands.js'

/** One key of `reg query … /s` output with its values. */
export interface RegistryEntry {
  key: string
  values: Record<string, string>
}

const VALUE_LINE = /^ {4}(.+?) {4}(REG_[A-Z_]+)(?: {4}(.*))?$/

/**
 * Parses the text `reg query KEY /s` prints: a key at the start of a line,
 * then its values indented by four spaces as `name    REG_TYPE    data`.
 */
export function parseRegQuery (output: string): RegistryEntry[] {
  const entries: RegistryEntry[] = []
  let current: RegistryEntry | undefined
  for (const raw of output.split(/\r?\n/)) {
    const line = raw.replace(/\r$/, '')
    if (line.trim() === '') continue
    if (/^HKEY_[A-Z_]+/.test(line)) {
      current = { key: line.trim(), values: {} }
      entries.push(current)
      continue
    }
    if (current === undefined || /^End of search/.test(line)) continue
    const match = VALUE_LINE.exec(line)
    if (match !== null) current.values[match[1]] = (match[3] ?? '').replace(/\s+$/, '')
  }
  return entries
}

function same (a: string | undefined, b: string): boolean {
  return a !== undefined && a.trim().toLowerCase() === b.trim().toLowerCase()
}

/** The Uninstall entries of a product, by its full name and, when given, its publisher. */
export function findProducts (entries: readonly RegistryEntry[], displayName: string, publisher?: string): RegistryEntry[] {
  return entries.filter(entry => same(entry.values.DisplayName, displayName) && (publisher === undefined || same(entry.values.Publisher, publisher)))
}

/** A product code inside an MsiExec UninstallString (`MsiExec.exe /I{…}` or `/X{…}`). */
export function msiProductCodeOf (uninstallString: string): string | undefined {
  const match = /msiexec(?:\.exe)?"?\s+\/[IX]\s*(\{[0-9A-Fa-f-]{36}\})/i.exec(uninstallString)
  return match?.[1]
}

/**
 * How to remove a product silently: its QuietUninstallString, or an MSI
 * product's UninstallString turned into `msiexec /x … /qn`. An installer that
 * registers neither would show a dialog, so it is refused.
 */
export function quietUninstallCommand (entry: RegistryEntry, runArgs: readonly string[] = []): CommandLine {
  const quiet = entry.values.QuietUninstallString
  if (quiet !== undefined && quiet.trim() !== '') return cmdCommand([quiet.trim(), ...runArgs].join(' '))
  const code = msiProductCodeOf(entry.values.UninstallString ?? '')
  if (code !== undefined) return msiUninstallCommand(code, runArgs)
  throw new TypeError(`${entry.values.DisplayName ?? entry.key} registers no QuietUninstallString and is not an MSI product; give the package a command uninstall spec with the uninstaller's silent switch`)
}
