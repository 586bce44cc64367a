import test from 'ava'
// @ts-expect-error the console is plain JavaScript, checked by its own tsconfig
import { visibleText } from '../../coordinator/console/js/dom.js'
import { escapeControlCharacters, findForbiddenText, forbiddenInLabel } from '../../protocol/text.js'

const hostile = 'pc\u001b[2J\u001b[31m\r\nforged\u0000\u009b31m\u202egpj.exe\tok\n'

test('the console shows control characters and bidirectional overrides as visible escapes, keeping tab and line feed', t => {
  t.is(visibleText(hostile), 'pc\\x1b[2J\\x1b[31m\nforged\\x00\\x9b31m\\u202egpj.exe\tok\n')
  t.is(visibleText('Zürich 東京 — ok'), 'Zürich 東京 — ok')
  t.is(visibleText('installer output\r\nline two\r\n'), 'installer output\nline two\n', 'Windows line ends are line ends')
})

test('the CLI shows every control character escaped, or keeps those it is told to', t => {
  t.is(escapeControlCharacters(hostile), 'pc\\x1b[2J\\x1b[31m\\r\\nforged\\x00\\x9b31m\\u202egpj.exe\\tok\\n')
  t.is(escapeControlCharacters(hostile, '\n'), 'pc\\x1b[2J\\x1b[31m\\r\nforged\\x00\\x9b31m\\u202egpj.exe\\tok\n')
})

test('labels refuse every control character; free text in a body keeps tab and line breaks only, wherever it is', t => {
  t.is(forbiddenInLabel('pc-01.example.org'), undefined)
  for (const character of ['\u0000', '\t', '\n', '\r', '\u001b', '\u007f', '\u0085', '\u009b', '\u2028', '\u202e', '\u2066']) t.is(forbiddenInLabel(`a${character}b`), character)
  t.is(findForbiddenText({ description: 'line one\n\tline two\r\n', tags: ['a', 'b'], n: 1, ok: true, none: null }), undefined)
  t.deepEqual(findForbiddenText({ detection: { rules: [{ name: 'x' }, { name: 'y\u001b' }] } }), { path: 'detection.rules.1.name', character: '\u001b' })
  t.deepEqual(findForbiddenText({ ['k\u0000']: 1 }), { path: '(a key)', character: '\u0000' })
  t.deepEqual(findForbiddenText('\u0007'), { path: '(root)', character: '\u0007' })
})
