import { MAX_RUN_ARGS } from './limits.js'

/**
 * Splits a command line the way a POSIX shell splits words, honouring single
 * quotes, double quotes and backslashes, but expanding nothing. Installers run
 * without a shell, so run arguments such as `/S /D="C:\Program Files\App"` are
 * split once here and passed through as they are.
 */
export function splitRunArgs (line: string): string[] {
  const words: string[] = []
  let current = ''
  let inWord = false
  let quote: '"' | "'" | undefined
  for (let index = 0; index < line.length; index++) {
    const char = line[index]
    if (quote === "'") {
      if (char === "'") quote = undefined
      else current += char
      continue
    }
    if (quote === '"') {
      if (char === '"') quote = undefined
      else if (char === '\\' && (line[index + 1] === '"' || line[index + 1] === '\\')) current += line[++index]
      else current += char
      continue
    }
    if (char === '"' || char === "'") {
      quote = char
      inWord = true
    } else if (char === '\\' && index + 1 < line.length && line[index + 1] !== '\\' && /\s|["']/.test(line[index + 1])) {
      current += line[++index]
      inWord = true
    } else if (/\s/.test(char)) {
      if (inWord) words.push(current)
      current = ''
      inWord = false
    } else {
      current += char
      inWord = true
    }
  }
  if (quote !== undefined) throw new SyntaxError(`unterminated ${quote} quote in run arguments`)
  if (inWord) words.push(current)
  if (words.length > MAX_RUN_ARGS) throw new RangeError(`at most ${MAX_RUN_ARGS} run arguments`)
  return words
}
