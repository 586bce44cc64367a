// Forms generated from the JSON schemas of the API's requests (its OpenAPI
// document): field types, enums, required fields and nested objects come from
// the schema; labels and help from the message catalogues by field path,
// falling back to the schema's description. The page does not second-guess the
// server: what it sends is what the operator entered, and the server's own
// messages (problem+json `errors[]`) are shown next to the fields they name.

import { h, replace, uniqueId } from './dom.js'
import { resolveSchema } from './openapi.js'
import { has, t } from './i18n.js'

/**
 * @typedef {{ label?: string, help?: string, widget?: string, hidden?: boolean }} FieldInfo
 * @typedef {{ id: string, path: string, schema: any, required: boolean, value: any, label: string, help: string | undefined }} WidgetContext
 * @typedef {{ control: HTMLElement, read: () => any, focus?: () => void, group?: boolean }} Widget
 * @typedef {(context: WidgetContext) => Widget} WidgetFactory
 * @typedef {{ path: string, element: HTMLElement, read: () => any, setErrors: (messages: string[]) => void, focus: () => void }} Field
 */

/** `bandwidthKBps` → `Bandwidth KBps`; `max-attempts` → `Max attempts`. @param {string} name */
export function humanize (name) {
  const words = name.replace(/[-_]+/g, ' ').replace(/([a-z0-9])([A-Z][a-z])/g, '$1 $2').trim()
  return words.charAt(0).toUpperCase() + words.slice(1).toLowerCase().replace(/\bkbps\b/g, 'KB/s').replace(/\bid(s?)\b/g, 'ID$1')
}

/**
 * Label and help of a field: the catalogue (`field.<path>`, `help.<path>`),
 * else the schema's title and description.
 * @param {string} scope catalogue prefix, e.g. `task`
 * @param {string} path dotted field path
 * @param {any} schema
 */
export function describeField (scope, path, schema) {
  const generic = path.replace(/\.\d+(?=\.|$)/g, '')
  const labelKey = `field.${scope}.${generic}`
  const helpKey = `help.${scope}.${generic}`
  const name = generic.split('.').pop() ?? generic
  // Names that mean the same everywhere (a reason, a comment) share one message.
  const commonKey = `field.common.${name}`
  return {
    label: has(labelKey) ? t(labelKey) : has(commonKey) ? t(commonKey) : (schema?.title ?? humanize(name)),
    help: has(helpKey) ? t(helpKey) : schema?.description
  }
}

/** The type of a schema, ignoring `null` in a list of types. @param {any} schema */
function typeOf (schema) {
  if (Array.isArray(schema.type)) return schema.type.find(/** @param {string} type */ type => type !== 'null')
  if (schema.type !== undefined) return schema.type
  if (schema.properties !== undefined) return 'object'
  if (schema.enum !== undefined) return typeof schema.enum[0]
  return undefined
}

/**
 * For a union of objects that share a property with a constant in each (a
 * discriminated union), that property's name.
 * @param {any[]} variants
 */
function discriminatorOf (variants) {
  if (variants.length < 2 || !variants.every(variant => typeOf(variant) === 'object')) return undefined
  const [first, ...rest] = variants
  return Object.keys(first.properties ?? {}).find(name => first.properties[name]?.const !== undefined &&
    rest.every(variant => variant.properties?.[name]?.const !== undefined))
}

/** An ISO instant as the value of a datetime-local input, in local time. @param {any} iso */
function localDateTime (iso) {
  if (typeof iso !== 'string' || iso === '') return ''
  const at = new Date(iso)
  if (Number.isNaN(at.getTime())) return ''
  const two = (/** @type {number} */ n) => String(n).padStart(2, '0')
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())}T${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}`
}

/** @param {string} text */
function linesOf (text) {
  return text.split('\n').map(line => line.trim()).filter(line => line !== '')
}

/**
 * Builds a form for an object schema.
 * @param {{
 *   schema: any, document?: any, scope: string, values?: Record<string, any>,
 *   info?: (path: string) => FieldInfo | undefined,
 *   widgets?: Record<string, WidgetFactory>,
 *   omit?: string[]
 * }} options
 */
export function schemaForm (options) {
  const root = options.schema
  /** @type {Map<string, Field>} */
  const fields = new Map()
  const summary = h('div', { class: 'form-errors', role: 'alert', tabindex: '-1', hidden: true })
  const resolve = (/** @type {any} */ schema) => resolveSchema(schema ?? {}, root, options.document)

  /**
   * @param {any} rawSchema @param {string} path @param {boolean} required @param {any} value
   * @param {boolean} [withinOptional] inside an object the operator may leave out: nothing is preset
   * @returns {Field}
   */
  function build (rawSchema, path, required, value, withinOptional = false) {
    const schema = resolve(rawSchema)
    const id = uniqueId('field')
    const described = describeField(options.scope, path, schema)
    const info = options.info?.(path) ?? {}
    const label = info.label ?? described.label
    const help = info.help ?? described.help
    const widgetName = info.widget
    if (widgetName !== undefined && options.widgets?.[widgetName] !== undefined) {
      return wrap(options.widgets[widgetName]({ id, path, schema, required, value, label, help }), { id, path, label, help, required })
    }
    const variants = schema.oneOf ?? schema.anyOf
    if (Array.isArray(variants)) {
      const resolved = variants.map(resolve).filter(/** @param {any} variant */ variant => variant.type !== 'null')
      if (resolved.length === 1) return build(resolved[0], path, required, value, withinOptional)
      const discriminator = discriminatorOf(resolved)
      if (discriminator !== undefined) return buildUnion(resolved, discriminator, { id, path, label, help, required, value })
      // A value that may be given in several shapes (a command line or its words): offer the simplest.
      const simplest = resolved.find(/** @param {any} variant */ variant => ['string', 'number', 'integer', 'boolean'].includes(typeOf(variant))) ?? resolved[0]
      return build(simplest, path, required, Array.isArray(value) && typeOf(simplest) === 'string' ? value.join(' ') : value, withinOptional)
    }
    const type = typeOf(schema)
    if (type === 'object' && schema.properties === undefined && typeof schema.additionalProperties === 'object') {
      return buildMap(schema, { id, path, label, help, required, value })
    }
    if (type === 'object') return buildObject(schema, path, { id, label, help, required, value, nested: true, withinOptional })
    if (type === 'array') return buildArray(schema, { id, path, label, help, required, value })
    return wrap(scalar(schema, { id, path, required, value, label, help, withinOptional }), { id, path, label, help, required })
  }

  /**
   * @param {any} schema
   * @param {{ id: string, path: string, required: boolean, value: any, label: string, help: string | undefined, withinOptional?: boolean }} context
   * @returns {Widget}
   */
  function scalar (schema, context) {
    const type = typeOf(schema)
    if (schema.const !== undefined) {
      return { control: h('output', { id: context.id }, String(schema.const)), read: () => schema.const }
    }
    if (Array.isArray(schema.enum)) {
      const mayBeUnset = !context.required || context.withinOptional === true
      const select = h('select', { id: context.id, name: context.path },
        mayBeUnset ? h('option', { value: '' }, t('form.unset')) : null,
        schema.enum.map(/** @param {any} option */ option => h('option', { value: String(option), selected: context.value === option }, enumLabel(context.path, option))))
      if (!mayBeUnset && context.value === undefined && schema.default !== undefined) Reflect.set(select, 'value', String(schema.default))
      return { control: select, read: () => { const chosen = /** @type {HTMLSelectElement} */ (select).value; return chosen === '' ? undefined : schema.enum.find(/** @param {any} option */ option => String(option) === chosen) } }
    }
    if (type === 'boolean') {
      const box = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id: context.id, name: context.path, checked: context.value === true }))
      const initial = context.value
      return { control: box, read: () => box.checked ? true : (context.required || initial !== undefined ? false : undefined) }
    }
    if (type === 'integer' || type === 'number') {
      const input = /** @type {HTMLInputElement} */ (h('input', {
        type: 'number', id: context.id, name: context.path, inputmode: type === 'integer' ? 'numeric' : 'decimal',
        step: type === 'integer' ? '1' : 'any', min: schema.minimum ?? schema.exclusiveMinimum, max: schema.maximum ?? schema.exclusiveMaximum,
        value: context.value ?? '', placeholder: schema.default !== undefined ? String(schema.default) : undefined
      }))
      return {
        control: input,
        read: () => {
          if (input.value.trim() === '') return undefined
          const number = Number(input.value)
          // Anything else goes to the server as typed, so that its message explains it.
          return Number.isFinite(number) ? number : input.value
        }
      }
    }
    if (type === 'string' && schema.format === 'date-time') {
      // Entered in the operator's local time, sent as an ISO instant.
      const input = /** @type {HTMLInputElement} */ (h('input', { type: 'datetime-local', id: context.id, name: context.path, step: '1', value: localDateTime(context.value) }))
      return {
        control: input,
        read: () => {
          if (input.value === '') return undefined
          const at = new Date(input.value)
          return Number.isNaN(at.getTime()) ? input.value : at.toISOString()
        }
      }
    }
    if (type === 'string' && (schema.contentMediaType === 'application/octet-stream' || schema.format === 'binary')) {
      const input = /** @type {HTMLInputElement} */ (h('input', { type: 'file', id: context.id, name: context.path }))
      return { control: input, read: () => input.files?.[0] }
    }
    const long = (schema.maxLength ?? 0) > 2000
    const input = /** @type {HTMLInputElement | HTMLTextAreaElement} */ (long
      ? h('textarea', { id: context.id, name: context.path, rows: 3, maxlength: schema.maxLength, value: context.value ?? '' })
      : h('input', { type: 'text', id: context.id, name: context.path, maxlength: schema.maxLength, value: context.value ?? '', autocomplete: 'off', spellcheck: 'false', placeholder: schema.default !== undefined ? String(schema.default) : undefined }))
    return { control: input, read: () => input.value === '' ? undefined : input.value }
  }

  /** @param {string} path @param {any} value */
  function enumLabel (path, value) {
    const key = `enum.${options.scope}.${path.replace(/\.\d+(?=\.|$)/g, '')}.${value}`
    return has(key) ? t(key) : String(value)
  }

  /**
   * Puts a control in its field: label (or legend), help, and a place for errors.
   * @param {Widget} widget
   * @param {{ id: string, path: string, label: string, help: string | undefined, required: boolean }} context
   * @returns {Field}
   */
  function wrap (widget, context) {
    const helpId = `${context.id}-help`
    const errorId = `${context.id}-error`
    const error = h('p', { class: 'field-error', id: errorId, hidden: true })
    const helpText = context.help !== undefined ? h('p', { class: 'help', id: helpId }, context.help) : null
    const describedBy = [helpText !== null ? helpId : null, errorId].filter(Boolean).join(' ')
    const focusable = widget.control.matches('input, select, textarea') ? widget.control : widget.control.querySelector('input, select, textarea, button')
    focusable?.setAttribute('aria-describedby', describedBy)
    if (context.required) focusable?.setAttribute('aria-required', 'true')
    const marker = context.required ? h('span', { class: 'required', 'aria-hidden': 'true', title: t('form.required') }, ' *') : null
    const isCheckbox = widget.control instanceof HTMLInputElement && widget.control.type === 'checkbox'
    let element
    if (widget.group === true) {
      element = h('fieldset', { class: 'field field-group', 'aria-describedby': describedBy }, h('legend', null, context.label, marker), helpText, widget.control, error)
    } else if (isCheckbox) {
      element = h('div', { class: 'field field-check' }, widget.control, h('span', null, h('label', { for: context.id }, context.label), marker), helpText, error)
    } else {
      // The marker stays outside the label: the field's accessible name is its label alone (aria-required says the rest).
      element = h('div', { class: 'field' }, h('div', { class: 'label-row' }, h('label', { for: context.id }, context.label), marker), widget.control, helpText, error)
    }
    const field = {
      path: context.path,
      element,
      read: widget.read,
      focus: () => { (widget.focus ?? (() => /** @type {HTMLElement | null} */ (focusable)?.focus()))() },
      /** @param {string[]} messages */
      setErrors: messages => {
        replace(error, messages.join(' '))
        error.hidden = messages.length === 0
        if (messages.length > 0) focusable?.setAttribute('aria-invalid', 'true')
        else focusable?.removeAttribute('aria-invalid')
      }
    }
    fields.set(context.path, field)
    return field
  }

  /**
   * @param {any} schema @param {string} path
   * @param {{ id: string, label: string, help: string | undefined, required: boolean, value: any, nested: boolean, exclude?: string[], withinOptional?: boolean }} context
   * @returns {Field}
   */
  function buildObject (schema, path, context) {
    const childrenWithinOptional = context.withinOptional === true || (context.nested && !context.required)
    const required = new Set(schema.required ?? [])
    const value = context.value ?? {}
    /** @type {Array<[string, Field]>} */
    const children = []
    for (const [name, property] of Object.entries(schema.properties ?? {})) {
      const childPath = path === '' ? name : `${path}.${name}`
      if (context.exclude?.includes(name) || options.omit?.includes(childPath) || options.info?.(childPath)?.hidden === true) continue
      children.push([name, build(property, childPath, required.has(name), value[name], childrenWithinOptional)])
    }
    const read = () => {
      /** @type {Record<string, any>} */
      const out = {}
      for (const [name, field] of children) {
        const item = field.read()
        if (item !== undefined) out[name] = item
      }
      return Object.keys(out).length === 0 && !context.required && context.nested ? undefined : out
    }
    const error = h('p', { class: 'field-error', hidden: true })
    const element = context.nested
      ? h('fieldset', { class: 'group', id: context.id }, h('legend', null, context.label, context.required ? h('span', { class: 'required', 'aria-hidden': 'true' }, ' *') : null), context.help !== undefined ? h('p', { class: 'help' }, context.help) : null, error, children.map(([, field]) => field.element))
      : h('div', { class: 'fields' }, error, children.map(([, field]) => field.element))
    const field = {
      path,
      element,
      read,
      focus: () => { children[0]?.[1].focus() },
      /** @param {string[]} messages */
      setErrors: messages => { replace(error, messages.join(' ')); error.hidden = messages.length === 0 }
    }
    fields.set(path, field)
    return field
  }

  /**
   * One of several object shapes, chosen by a property (e.g. a detection rule's `type`).
   * @param {any[]} variants @param {string} discriminator
   * @param {{ id: string, path: string, label: string, help: string | undefined, required: boolean, value: any }} context
   * @returns {Field}
   */
  function buildUnion (variants, discriminator, context) {
    const selectId = `${context.id}-kind`
    const choicePath = `${context.path}.${discriminator}`
    const select = /** @type {HTMLSelectElement} */ (h('select', { id: selectId, name: choicePath },
      context.required ? null : h('option', { value: '' }, t('form.none')),
      variants.map(variant => {
        const constant = variant.properties[discriminator].const
        return h('option', { value: String(constant), selected: context.value?.[discriminator] === constant }, enumLabel(choicePath, constant))
      })))
    const body = h('div', { class: 'union-body' })
    /** @type {Field | undefined} */
    let current
    const render = () => {
      for (const path of [...fields.keys()]) if (path.startsWith(context.path + '.') && path !== choicePath) fields.delete(path)
      const variant = variants.find(candidate => String(candidate.properties[discriminator].const) === select.value)
      current = variant === undefined ? undefined : buildObject(variant, context.path, { id: uniqueId('variant'), label: context.label, help: undefined, required: true, value: context.value, nested: false, exclude: [discriminator] })
      fields.set(context.path, field)
      replace(body, current?.element)
    }
    select.addEventListener('change', render)
    const described = describeField(options.scope, choicePath, {})
    const error = h('p', { class: 'field-error', hidden: true })
    const element = h('fieldset', { class: 'group' },
      h('legend', null, context.label, context.required ? h('span', { class: 'required', 'aria-hidden': 'true' }, ' *') : null),
      context.help !== undefined ? h('p', { class: 'help' }, context.help) : null,
      h('div', { class: 'field' }, h('label', { for: selectId }, described.label), select),
      error, body)
    const field = {
      path: context.path,
      element,
      read: () => {
        if (current === undefined) return undefined
        const chosen = variants.find(candidate => String(candidate.properties[discriminator].const) === select.value)
        return { [discriminator]: chosen.properties[discriminator].const, ...current.read() }
      },
      focus: () => { select.focus() },
      /** @param {string[]} messages */
      setErrors: messages => { replace(error, messages.join(' ')); error.hidden = messages.length === 0 }
    }
    fields.set(choicePath, { ...field, focus: () => { select.focus() } })
    render()
    return field
  }

  /**
   * @param {any} schema
   * @param {{ id: string, path: string, label: string, help: string | undefined, required: boolean, value: any }} context
   * @returns {Field}
   */
  function buildArray (schema, context) {
    const items = resolve(schema.items ?? {})
    const itemType = typeOf(items)
    const values = Array.isArray(context.value) ? context.value : []
    if (Array.isArray(items.enum)) {
      const boxes = items.enum.map(/** @param {any} option */ option => {
        const id = uniqueId('choice')
        const box = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id, value: String(option), checked: values.includes(option) }))
        return { option, box, element: h('div', { class: 'check' }, box, h('label', { for: id }, enumLabel(context.path, option))) }
      })
      return wrap({
        group: true,
        control: h('div', { class: 'checks' }, boxes.map(/** @param {any} entry */ entry => entry.element)),
        read: () => {
          const chosen = boxes.filter(/** @param {any} entry */ entry => entry.box.checked).map(/** @param {any} entry */ entry => entry.option)
          return chosen.length === 0 && !context.required ? undefined : chosen
        }
      }, context)
    }
    if (itemType === 'object') return buildObjectList(items, context, values)
    // Words, names, paths: one per line, so that none needs quoting.
    const area = /** @type {HTMLTextAreaElement} */ (h('textarea', { id: context.id, name: context.path, rows: Math.min(6, Math.max(2, values.length)), value: values.join('\n'), spellcheck: 'false' }))
    return wrap({
      control: area,
      read: () => {
        const lines = linesOf(area.value)
        if (lines.length === 0) return context.required ? [] : undefined
        return itemType === 'integer' || itemType === 'number' ? lines.map(line => Number.isFinite(Number(line)) ? Number(line) : line) : lines
      }
    }, { ...context, help: [context.help, t('form.onePerLine')].filter(Boolean).join(' ') })
  }

  /**
   * An object whose keys the operator chooses (e.g. exit code → meaning): rows of key and value.
   * @param {any} schema
   * @param {{ id: string, path: string, label: string, help: string | undefined, required: boolean, value: any }} context
   * @returns {Field}
   */
  function buildMap (schema, context) {
    const valueSchema = resolve(schema.additionalProperties)
    /** @type {Array<{ key: HTMLInputElement, value: Widget, element: HTMLElement }>} */
    const rows = []
    const list = h('div', { class: 'map-rows' })
    /** @param {string} key @param {any} value */
    const add = (key, value) => {
      const keyId = uniqueId('key')
      const valueId = uniqueId('value')
      const keyInput = /** @type {HTMLInputElement} */ (h('input', { type: 'text', id: keyId, value: key, autocomplete: 'off', spellcheck: 'false' }))
      const widget = scalar(valueSchema, { id: valueId, path: context.path, required: true, value, label: '', help: undefined })
      const row = { key: keyInput, value: widget, element: h('div') }
      row.element = h('div', { class: 'map-row' },
        h('div', { class: 'inline-field' }, h('label', { for: keyId }, t('form.key')), keyInput),
        h('div', { class: 'inline-field' }, h('label', { for: valueId }, t('form.value')), widget.control),
        h('button', { type: 'button', class: 'secondary small', onclick: () => { rows.splice(rows.indexOf(row), 1); row.element.remove() } }, t('form.remove')))
      rows.push(row)
      list.appendChild(row.element)
    }
    for (const [key, value] of Object.entries(context.value ?? {})) add(key, value)
    return wrap({
      group: true,
      control: h('div', null, list, h('button', { type: 'button', class: 'secondary small', onclick: () => { add('', undefined); rows[rows.length - 1].key.focus() } }, t('form.add'))),
      read: () => {
        /** @type {Record<string, any>} */
        const out = {}
        for (const row of rows) if (row.key.value.trim() !== '') out[row.key.value.trim()] = row.value.read()
        return Object.keys(out).length === 0 && !context.required ? undefined : out
      }
    }, context)
  }

  /**
   * @param {any} items
   * @param {{ id: string, path: string, label: string, help: string | undefined, required: boolean }} context
   * @param {any[]} values
   * @returns {Field}
   */
  function buildObjectList (items, context, values) {
    /** @type {Array<{ field: Field, element: HTMLElement }>} */
    let entries = []
    const list = h('div', { class: 'object-list' })
    const renumber = () => {
      // Field paths carry the index, so errors like `schedules.1.at` find their field.
      const kept = entries.map(entry => entry.field.read())
      for (const path of [...fields.keys()]) if (path.startsWith(context.path + '.')) fields.delete(path)
      entries = []
      replace(list)
      kept.forEach(value => { add(value) })
    }
    /** @param {any} value */
    const add = value => {
      const index = entries.length
      const field = buildObject(items, `${context.path}.${index}`, { id: uniqueId('item'), label: t('form.item', { number: index + 1 }), help: undefined, required: true, value, nested: true })
      const remove = h('button', { type: 'button', class: 'secondary small', onclick: () => { entries.splice(entries.findIndex(entry => entry.field === field), 1); renumber() } }, t('form.remove'))
      const element = h('div', { class: 'object-item' }, field.element, remove)
      entries.push({ field, element })
      list.appendChild(element)
    }
    values.forEach(value => { add(value) })
    const control = h('div', null, list, h('button', { type: 'button', class: 'secondary small', onclick: () => { add(undefined) } }, t('form.add')))
    return wrap({
      group: true,
      control,
      read: () => {
        const out = entries.map(entry => entry.field.read())
        return out.length === 0 && !context.required ? undefined : out
      }
    }, context)
  }

  const top = buildObject(resolve(root), '', { id: uniqueId('form'), label: '', help: undefined, required: true, value: options.values, nested: false })
  const element = h('div', { class: 'schema-form' }, summary, top.element)

  return {
    element,
    /** The request body as entered. */
    read: () => top.read(),
    clearErrors () {
      for (const field of fields.values()) field.setErrors([])
      summary.hidden = true
      replace(summary)
    },
    /**
     * Shows a problem: each of its `errors[]` next to the field its path names
     * (the longest matching prefix), the rest above the form.
     * @param {{ message: string, errors?: Array<{ path: string, message: string }> }} problem
     */
    showProblem (problem) {
      this.clearErrors()
      /** @type {Map<Field, string[]>} */
      const byField = new Map()
      /** @type {string[]} */
      const unplaced = []
      for (const error of problem.errors ?? []) {
        const parts = error.path === '(root)' ? [] : error.path.split('.')
        let field
        for (let length = parts.length; length > 0 && field === undefined; length--) field = fields.get(parts.slice(0, length).join('.'))
        if (field === undefined) unplaced.push(error.path === '(root)' || error.path === '' ? error.message : `${error.path}: ${error.message}`)
        else byField.set(field, [...(byField.get(field) ?? []), error.message])
      }
      for (const [field, messages] of byField) field.setErrors(messages)
      replace(summary,
        h('p', null, byField.size > 0 ? t('form.fixFields') : problem.message),
        unplaced.length > 0 ? h('ul', null, unplaced.map(line => h('li', null, line))) : null)
      summary.hidden = false
      const first = [...byField.keys()][0]
      if (first !== undefined) first.focus()
      else summary.focus()
    }
  }
}
