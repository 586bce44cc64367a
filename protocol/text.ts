import { z } from 'zod'

/*
 * Control characters in text that people read. An escape sequence in a host
 * name clears an operator's screen or recolours a table, a CR or LF forges a
 * row, a NUL breaks every file or process call that gets the text, and the
 * bidirectional overrides reorder what is shown. None of them belongs in a
 * name; free text (a description, a detection script) keeps tab and line
 * breaks only.
 */

/** Control characters refused in free text: C0 but tab, LF and CR; DEL; C1. */
// eslint-disable-next-line no-control-regex
const FREE_TEXT_FORBIDDEN = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/

/** Characters refused in a label (a name, version, host name, site, group, path): every control character, line and paragraph separators and the bidirectional controls. */
// eslint-disable-next-line no-control-regex
const LABEL_FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/

/** Characters shown escaped on a terminal or page: every control character, the separators and the bidirectional controls. */
// eslint-disable-next-line no-control-regex
const SHOWN_ESCAPED = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

/** `U+001B` for a character. */
export function codePointName (character: string): string {
  return `U+${character.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`
}

/** The first character a label may not hold, or undefined. */
export function forbiddenInLabel (text: string): string | undefined {
  return LABEL_FORBIDDEN.exec(text)?.[0]
}

/** The first character free text may not hold, or undefined. */
export function forbiddenInFreeText (text: string): string | undefined {
  return FREE_TEXT_FORBIDDEN.exec(text)?.[0]
}

/**
 * The first string inside a parsed JSON value (keys included) that holds a
 * character free text may not, with where it is (`metadata.name`, `groups.2`).
 */
export function findForbiddenText (value: unknown, path = ''): { path: string, character: string } | undefined {
  // A stack rather than recursion: the body's nesting is bounded before it is parsed, the walk needs no bound of its own.
  const stack: Array<{ value: unknown, path: string }> = [{ value, path }]
  while (stack.length > 0) {
    const { value: current, path: at } = stack.pop()!
    if (typeof current === 'string') {
      const character = forbiddenInFreeText(current)
      if (character !== undefined) return { path: at === '' ? '(root)' : at, character }
    } else if (Array.isArray(current)) {
      for (let index = current.length - 1; index >= 0; index--) stack.push({ value: current[index], path: at === '' ? String(index) : `${at}.${index}` })
    } else if (current !== null && typeof current === 'object') {
      const entries = Object.entries(current)
      for (let index = entries.length - 1; index >= 0; index--) {
        const [key, inner] = entries[index]
        const character = forbiddenInFreeText(key)
        if (character !== undefined) return { path: at === '' ? '(a key)' : `${at} (a key)`, character }
        stack.push({ value: inner, path: at === '' ? key : `${at}.${key}` })
      }
    }
  }
  return undefined
}

/** A label refuses every control character (the message names the first). */
export function label<T extends z.ZodString> (schema: T): T {
  return schema.superRefine((text, context) => {
    const character = forbiddenInLabel(text)
    if (character !== undefined) context.addIssue({ code: 'custom', message: `must not contain control characters (found ${codePointName(character)})`, params: { reason: 'control-characters' } })
  }) as unknown as T
}

/**
 * Text received from elsewhere made safe to show: every control character
 * becomes a visible escape (`\x1b`, `\n`, `\u202e`), so that nothing in it
 * moves the cursor, clears the screen, recolours text or starts a new line.
 * `keep` lists characters left as they are (a multi-line block keeps `\n`).
 */
export function escapeControlCharacters (text: string, keep = ''): string {
  return text.replace(SHOWN_ESCAPED, character => {
    if (keep.includes(character)) return character
    switch (character) {
      case '\n': return '\\n'
      case '\r': return '\\r'
      case '\t': return '\\t'
    }
    const code = character.charCodeAt(0)
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`
  })
}
