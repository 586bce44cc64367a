// Builds DOM nodes from data without ever parsing markup: text is always a text node.

/**
 * Creates an element. `props`: `class`, `on<event>` handlers, boolean and
 * string attributes; `null`, `undefined` and `false` leave an attribute out.
 * Children may be nodes, strings, numbers, arrays of them, or nothing.
 * @param {string} tag
 * @param {Record<string, any> | null} [props]
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function h (tag, props, ...children) {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value)
    } else if (name === 'value' && 'value' in element) {
      Reflect.set(element, 'value', value)
    } else if (name === 'checked' || name === 'selected' || name === 'indeterminate') {
      Reflect.set(element, name, Boolean(value))
    } else {
      element.setAttribute(name, value === true ? '' : String(value))
    }
  }
  append(element, children)
  return element
}

// eslint-disable-next-line no-control-regex
const SHOWN_ESCAPED = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

/**
 * Text from devices and people as it is shown: control characters (tab and
 * line feed aside) and the bidirectional overrides become visible escapes
 * (`\x1b`, `\u202e`), so a host name or an installer's message cannot
 * reorder or hide what is beside it.
 * @param {string} text
 */
export function visibleText (text) {
  // A Windows line end (an installer's output) is a line end, not a stray carriage return.
  return text.replace(/\r\n/g, '\n').replace(SHOWN_ESCAPED, character => {
    const code = character.charCodeAt(0)
    if (character === '\r') return '\\r'
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`
  })
}

/**
 * @param {Node} parent
 * @param {any[]} children
 */
export function append (parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue
    parent.appendChild(child instanceof Node ? child : document.createTextNode(visibleText(String(child))))
  }
}

/**
 * Replaces a node's children.
 * @param {Node} parent
 * @param {...any} children
 */
export function replace (parent, ...children) {
  while (parent.firstChild !== null) parent.removeChild(parent.firstChild)
  append(parent, children)
}

let nextId = 0
/** A document-unique id for label/field pairs. @param {string} prefix */
export function uniqueId (prefix) {
  nextId += 1
  return `${prefix}-${nextId}`
}

/**
 * A table with a caption and column headers, wrapped so that it scrolls on narrow screens.
 * @param {{ caption: string, columns: Array<string | { label: string, className?: string }>, rows: HTMLElement[], empty?: string, captionHidden?: boolean }} spec
 */
export function table (spec) {
  const head = h('tr', null, spec.columns.map(column => typeof column === 'string'
    ? h('th', { scope: 'col' }, column)
    : h('th', { scope: 'col', class: column.className }, column.label)))
  const body = h('tbody', null, spec.rows.length > 0 ? spec.rows : h('tr', null, h('td', { colspan: spec.columns.length, class: 'empty' }, spec.empty ?? '')))
  return h('div', { class: 'table-wrap' }, h('table', null, h('caption', { class: spec.captionHidden === true ? 'visually-hidden' : undefined }, spec.caption), h('thead', null, head), body))
}
