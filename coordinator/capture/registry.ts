/**
 * The Windows registry side of a capture, as pure functions over the text
 * `reg export` writes (UTF-16LE with a byte-order mark, or UTF-8): a
 * snapshot of keys and values, the difference between two snapshots, the
 * `.reg` patch that makes that change on another machine (`reg import`), and
 * the patch that undoes it. Key paths and value names compare without regard
 * to case, as Windows does.
 */

/** A value as reg export writes it: `sz` for "quoted strings", otherwise the type word and its data with continuations joined. */
export interface RegistryValue {
  /** sz, dword, hex (binary), hex(2) expandable string, hex(7) multi-string, hex(b) qword, … */
  type: string
  /** The decoded string for sz; the lower-case hex digits (comma separated) or dword digits otherwise. */
  data: string
}

export interface RegistryKey {
  /** The path as exported, e.g. HKEY_LOCAL_MACHINE\SOFTWARE\Tool. */
  path: string
  /** By lower-cased name ('' is the default value, written @). */
  values: Map<string, { name: string, value: RegistryValue }>
}

/** Keys by lower-cased path. */
export type RegistrySnapshot = Map<string, RegistryKey>

/** Keys whose content changes by itself and says nothing about an install. */
export const DEFAULT_REGISTRY_EXCLUDES: readonly string[] = [
  'HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography\\RNG',
  'HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Explorer',
  'HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\bam',
  'HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\DeviceClasses',
  'HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer'
]

/** The export cannot be read as reg export text. */
export class RegistryFormatError extends Error {
  constructor (line: number, problem: string) {
    super(`reg export text, line ${line}: ${problem}`)
    this.name = 'RegistryFormatError'
  }
}

/** Decodes reg export bytes: UTF-16LE when they start with its byte-order mark, else UTF-8. */
export function decodeRegExport (bytes: Uint8Array): string {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (buffer[0] === 0xff && buffer[1] === 0xfe) return buffer.subarray(2).toString('utf16le')
  const text = buffer.toString('utf8')
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
}

/** Joins continuation lines (a trailing backslash) into logical lines, with their first line number. */
function logicalLines (text: string): Array<{ line: number, text: string }> {
  const out: Array<{ line: number, text: string }> = []
  const physical = text.split(/\r?\n/)
  for (let index = 0; index < physical.length; index++) {
    const start = index
    let line = physical[index]
    while (line.endsWith('\\') && !line.startsWith('[') && index + 1 < physical.length) {
      line = line.slice(0, -1) + physical[++index].trimStart()
    }
    out.push({ line: start + 1, text: line })
  }
  return out
}

/** Reads a quoted string starting at `at` (the opening quote); returns it decoded and the index after its closing quote. */
function readQuoted (text: string, at: number, line: number): { value: string, end: number } {
  let value = ''
  for (let index = at + 1; index < text.length; index++) {
    const char = text[index]
    if (char === '\\' && index + 1 < text.length) {
      value += text[++index]
      continue
    }
    if (char === '"') return { value, end: index + 1 }
    value += char
  }
  throw new RegistryFormatError(line, 'a quoted string does not end')
}

function quote (text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`
}

/** Parses value data: "string", dword:0000000a, hex:01,02 or hex(N):…; `-` (a deletion in a patch) gives undefined. */
function parseData (text: string, line: number): RegistryValue | undefined {
  if (text === '-') return undefined
  if (text.startsWith('"')) {
    const { value, end } = readQuoted(text, 0, line)
    if (text.slice(end).trim() !== '') throw new RegistryFormatError(line, 'text after a string value')
    return { type: 'sz', data: value }
  }
  const match = /^(dword|hex(?:\([0-9a-fA-F]+\))?):(.*)$/.exec(text)
  if (match === null) throw new RegistryFormatError(line, `unknown value data ${JSON.stringify(text.slice(0, 40))}`)
  const data = match[2].replace(/\s+/g, '').toLowerCase()
  if (match[1] === 'dword' && !/^[0-9a-f]{8}$/.test(data)) throw new RegistryFormatError(line, 'a dword needs 8 hex digits')
  if (match[1] !== 'dword' && data !== '' && !/^[0-9a-f]{2}(,[0-9a-f]{2})*$/.test(data)) throw new RegistryFormatError(line, 'hex data must be comma-separated bytes')
  return { type: match[1].toLowerCase(), data }
}

/** One parsed line of an export or a patch. */
type Statement =
  | { kind: 'key', path: string, remove: boolean }
  | { kind: 'value', name: string, value: RegistryValue | undefined }

function parseStatements (text: string): Array<{ line: number, statement: Statement }> {
  const out: Array<{ line: number, statement: Statement }> = []
  let sawHeader = false
  for (const { line, text: raw } of logicalLines(text)) {
    const trimmed = raw.trim()
    if (trimmed === '' || trimmed.startsWith(';')) continue
    if (!sawHeader) {
      if (trimmed !== 'Windows Registry Editor Version 5.00' && trimmed !== 'REGEDIT4') throw new RegistryFormatError(line, 'not reg export text (no "Windows Registry Editor Version 5.00" header)')
      sawHeader = true
      continue
    }
    if (trimmed.startsWith('[')) {
      if (!trimmed.endsWith(']')) throw new RegistryFormatError(line, 'a key line must end with ]')
      const remove = trimmed.startsWith('[-')
      out.push({ line, statement: { kind: 'key', path: trimmed.slice(remove ? 2 : 1, -1), remove } })
      continue
    }
    let name: string
    let rest: string
    if (trimmed.startsWith('@=')) {
      name = ''
      rest = trimmed.slice(2)
    } else if (trimmed.startsWith('"')) {
      const quoted = readQuoted(trimmed, 0, line)
      if (trimmed[quoted.end] !== '=') throw new RegistryFormatError(line, 'a value name must be followed by =')
      name = quoted.value
      rest = trimmed.slice(quoted.end + 1)
    } else {
      throw new RegistryFormatError(line, `unexpected line ${JSON.stringify(trimmed.slice(0, 40))}`)
    }
    out.push({ line, statement: { kind: 'value', name, value: parseData(rest, line) } })
  }
  if (!sawHeader) throw new RegistryFormatError(1, 'empty: no "Windows Registry Editor Version 5.00" header')
  return out
}

function excluded (path: string, excludes: readonly string[]): boolean {
  const lower = path.toLowerCase()
  return excludes.some(prefix => lower === prefix.toLowerCase() || lower.startsWith(prefix.toLowerCase() + '\\'))
}

/** Reads an export into a snapshot, leaving out keys under `excludes`. */
export function parseRegExport (text: string, excludes: readonly string[] = DEFAULT_REGISTRY_EXCLUDES): RegistrySnapshot {
  const snapshot: RegistrySnapshot = new Map()
  let current: RegistryKey | undefined
  for (const { line, statement } of parseStatements(text)) {
    if (statement.kind === 'key') {
      if (statement.remove) throw new RegistryFormatError(line, 'an export does not delete keys')
      current = excluded(statement.path, excludes) ? undefined : snapshot.get(statement.path.toLowerCase()) ?? { path: statement.path, values: new Map() }
      if (current !== undefined) snapshot.set(statement.path.toLowerCase(), current)
      continue
    }
    if (statement.value === undefined) throw new RegistryFormatError(line, 'an export does not delete values')
    current?.values.set(statement.name.toLowerCase(), { name: statement.name, value: statement.value })
  }
  return snapshot
}

export interface RegistryValueChange {
  key: string
  name: string
  before?: RegistryValue
  after?: RegistryValue
}

export interface RegistryDiff {
  /** Keys that appear (with their values under `values`). */
  addedKeys: string[]
  /** Keys that disappear, with everything below them. */
  removedKeys: string[]
  /** Values added (no before), changed, or removed (no after) in keys present on both sides or added. */
  values: RegistryValueChange[]
}

function sameValue (a: RegistryValue, b: RegistryValue): boolean {
  return a.type === b.type && a.data === b.data
}

/** What changed between two snapshots, in key order. */
export function diffRegistry (before: RegistrySnapshot, after: RegistrySnapshot): RegistryDiff {
  const diff: RegistryDiff = { addedKeys: [], removedKeys: [], values: [] }
  const order = (map: RegistrySnapshot): string[] => [...map.keys()].sort()
  for (const id of order(after)) {
    const now = after.get(id)!
    const old = before.get(id)
    if (old === undefined) diff.addedKeys.push(now.path)
    for (const [valueId, { name, value }] of [...now.values.entries()].sort(([a], [b]) => a < b ? -1 : 1)) {
      const previous = old?.values.get(valueId)
      if (previous === undefined) diff.values.push({ key: now.path, name, after: value })
      else if (!sameValue(previous.value, value)) diff.values.push({ key: now.path, name, before: previous.value, after: value })
    }
    if (old === undefined) continue
    for (const [valueId, { name, value }] of [...old.values.entries()].sort(([a], [b]) => a < b ? -1 : 1)) {
      if (!now.values.has(valueId)) diff.values.push({ key: now.path, name, before: value })
    }
  }
  // A removed key takes its subkeys with it: only the topmost removed ones are listed.
  const removed = order(before).filter(id => !after.has(id)).map(id => before.get(id)!.path)
  diff.removedKeys = removed.filter(path => !removed.some(other => other !== path && path.toLowerCase().startsWith(other.toLowerCase() + '\\')))
  return diff
}

function formatData (value: RegistryValue): string {
  if (value.type === 'sz') return quote(value.data)
  return `${value.type}:${value.data}`
}

function formatName (name: string): string {
  return name === '' ? '@' : quote(name)
}

function patchText (sections: Map<string, string[]>, removedKeys: readonly string[]): string {
  const lines = ['Windows Registry Editor Version 5.00', '']
  for (const key of removedKeys) lines.push(`[-${key}]`, '')
  for (const [key, values] of sections) lines.push(`[${key}]`, ...values, '')
  return lines.join('\r\n')
}

/** The .reg text that turns the `before` machine into the `after` one (what a capture package would import). */
export function registryPatch (diff: RegistryDiff): string {
  const sections = new Map<string, string[]>()
  for (const key of diff.addedKeys) sections.set(key, [])
  for (const change of diff.values) {
    const lines = sections.get(change.key) ?? []
    lines.push(`${formatName(change.name)}=${change.after !== undefined ? formatData(change.after) : '-'}`)
    sections.set(change.key, lines)
  }
  return patchText(sections, diff.removedKeys)
}

/**
 * The .reg text that undoes `registryPatch(diff)`. Removed keys come back
 * from `before` with all their values and subkeys; added keys go.
 */
export function registryUndoPatch (diff: RegistryDiff, before: RegistrySnapshot): string {
  const sections = new Map<string, string[]>()
  for (const removed of diff.removedKeys) {
    const prefix = removed.toLowerCase()
    for (const [id, key] of [...before.entries()].sort(([a], [b]) => a < b ? -1 : 1)) {
      if (id !== prefix && !id.startsWith(prefix + '\\')) continue
      sections.set(key.path, [...key.values.values()].map(({ name, value }) => `${formatName(name)}=${formatData(value)}`))
    }
  }
  for (const change of diff.values) {
    if (diff.addedKeys.some(key => key.toLowerCase() === change.key.toLowerCase())) continue
    const lines = sections.get(change.key) ?? []
    lines.push(`${formatName(change.name)}=${change.before !== undefined ? formatData(change.before) : '-'}`)
    sections.set(change.key, lines)
  }
  return patchText(sections, diff.addedKeys)
}

/** Applies a .reg patch to a snapshot as `reg import` would: keys deleted with [-…] (and below), created, values set or deleted with =-. */
export function applyRegistryPatch (snapshot: RegistrySnapshot, patch: string): RegistrySnapshot {
  const result: RegistrySnapshot = new Map([...snapshot.entries()].map(([id, key]) => [id, { path: key.path, values: new Map(key.values) }]))
  let current: RegistryKey | undefined
  for (const { statement } of parseStatements(patch)) {
    if (statement.kind === 'key') {
      const id = statement.path.toLowerCase()
      if (statement.remove) {
        for (const existing of [...result.keys()]) if (existing === id || existing.startsWith(id + '\\')) result.delete(existing)
        current = undefined
        continue
      }
      current = result.get(id) ?? { path: statement.path, values: new Map() }
      result.set(id, current)
      continue
    }
    if (current === undefined) continue
    if (statement.value === undefined) current.values.delete(statement.name.toLowerCase())
    else current.values.set(statement.name.toLowerCase(), { name: statement.name, value: statement.value })
  }
  return result
}
