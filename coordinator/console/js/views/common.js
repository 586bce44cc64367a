// Pieces shared by the views: headings, errors, state badges, progress, dialogs, action buttons.

import { ApiProblem, NetworkError } from '../api.js'
import { h, replace, uniqueId } from '../dom.js'
import { formatDateTime, has, t } from '../i18n.js'
import { fillPath, jsonRequestSchema, operation, permits, resourceActions } from '../openapi.js'
import { describeField, schemaForm } from '../schema-form.js'

/** @param {string} title @param {...any} extra */
export function heading (title, ...extra) {
  return h('div', { class: 'page-head' }, h('h1', null, title), h('div', { class: 'page-actions' }, extra))
}

/** A message for any error an API call can end in. @param {unknown} error */
export function errorText (error) {
  if (error instanceof ApiProblem) {
    if (error.status === 403) return t('error.forbidden', { detail: error.message })
    return error.message
  }
  if (error instanceof NetworkError) return t('error.network')
  return String(/** @type {Error} */ (error)?.message ?? error)
}

/** @param {unknown} error */
export function errorBox (error) {
  return h('div', { class: 'error-box', role: 'alert' }, errorText(error))
}

export function loading () {
  return h('p', { class: 'loading', role: 'status' }, t('common.loading'))
}

/** @param {string} state */
export function stateBadge (state) {
  const key = `state.${state}`
  return h('span', { class: `badge state-${state}` }, has(key) ? t(key) : state)
}

/** A labelled progress bar with its percentage. @param {number} percent 0…100 @param {string} label */
export function progressBar (percent, label) {
  const value = Math.max(0, Math.min(100, Number.isFinite(percent) ? percent : 0))
  return h('div', { class: 'progress' },
    h('progress', { max: 100, value, 'aria-label': label }),
    h('span', { class: 'progress-text' }, `${Math.round(value)}%`))
}

/** Device counts by state, e.g. "succeeded 3 · downloading 2". @param {Record<string, number>} counts */
export function countsList (counts) {
  const entries = Object.entries(counts ?? {}).filter(([, count]) => count > 0)
  if (entries.length === 0) return h('span', { class: 'muted' }, '—')
  return h('ul', { class: 'counts' }, entries.map(([state, count]) => h('li', { class: `state-${state}` }, stateBadge(state), ' ', h('span', { class: 'count' }, String(count)))))
}

/**
 * A modal dialog; resolves with what the operator chose.
 * @param {{ title: string, body: any, confirm: string, danger?: boolean, onConfirm?: () => Promise<boolean | void> }} options
 *   `onConfirm` may keep the dialog open by returning false (e.g. to show errors).
 * @returns {Promise<boolean>}
 */
export function dialog (options) {
  return new Promise(resolve => {
    const titleId = uniqueId('dialog-title')
    const error = h('div', { class: 'error-box', role: 'alert', hidden: true })
    const confirm = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', class: options.danger === true ? 'danger' : 'primary' }, options.confirm))
    const element = /** @type {HTMLDialogElement} */ (h('dialog', { 'aria-labelledby': titleId },
      h('form', {
        method: 'dialog',
        onsubmit: async (/** @type {SubmitEvent} */ event) => {
          event.preventDefault()
          confirm.disabled = true
          error.hidden = true
          try {
            if ((await options.onConfirm?.()) === false) return
            element.close('confirm')
          } catch (failure) {
            replace(error, errorText(failure))
            error.hidden = false
          } finally {
            confirm.disabled = false
          }
        }
      },
      h('h2', { id: titleId }, options.title),
      h('div', { class: 'dialog-body' }, options.body),
      error,
      h('div', { class: 'dialog-actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => { element.close('cancel') } }, t('common.cancel')),
        confirm))))
    element.addEventListener('close', () => {
      element.remove()
      resolve(element.returnValue === 'confirm')
    })
    document.body.appendChild(element)
    element.showModal()
  })
}

/** @param {string} name */
function actionLabel (name) {
  const key = `action.${name}`
  return has(key) ? t(key) : describeField('action', name, {}).label
}

/**
 * Buttons for the actions the API offers on one resource (`POST {base}/{id}/{action}`,
 * `DELETE {base}/{id}`): a confirmation, and a form when the action takes a body.
 * @param {{ api: import('../api.js').Api, document: any, base: string, id: string, onDone: (name: string, result: any) => void, announce: (message: string) => void, skip?: string[], deleteWarning?: string, applies?: (name: string) => boolean }} options
 *   `applies` hides actions that make no sense in the resource's present state; actions it does not know are shown
 */
export function actionButtons (options) {
  const { actions, remove } = resourceActions(options.document, options.base)
  const item = `${options.base}/{id}`
  const buttons = []
  for (const action of actions) {
    if (options.skip?.includes(action.name) || options.applies?.(action.name) === false) continue
    if (!permits(options.document, 'post', action.path, options.api.identity?.role)) continue
    const label = actionLabel(action.name)
    const danger = ['cancel', 'block', 'retire'].includes(action.name)
    buttons.push(h('button', {
      type: 'button',
      class: danger ? 'danger' : 'secondary',
      'data-action': action.name,
      onclick: async () => {
        const form = action.schema !== undefined ? schemaForm({ schema: action.schema, document: options.document, scope: `action.${action.name}` }) : undefined
        const confirmKey = `confirm.${action.name}`
        await dialog({
          title: label,
          body: [h('p', null, has(confirmKey) ? t(confirmKey) : action.summary), form?.element],
          confirm: label,
          danger,
          onConfirm: async () => {
            try {
              const body = form?.read()
              const result = await options.api.post(fillPath(action.path, { id: options.id }), body ?? (action.bodyRequired ? {} : undefined))
              options.announce(t('common.done', { action: label }))
              options.onDone(action.name, result)
            } catch (error) {
              if (form !== undefined && /** @type {any} */ (error).errors?.length > 0) {
                form.showProblem(/** @type {any} */ (error))
                return false
              }
              throw error
            }
          }
        })
      }
    }, label))
  }
  if (remove !== undefined && !options.skip?.includes('delete') && permits(options.document, 'delete', item, options.api.identity?.role)) {
    buttons.push(h('button', {
      type: 'button',
      class: 'danger',
      'data-action': 'delete',
      onclick: async () => {
        await dialog({
          title: t('action.delete'),
          body: h('p', null, options.deleteWarning ?? remove.summary ?? ''),
          confirm: t('action.delete'),
          danger: true,
          onConfirm: async () => {
            const result = await options.api.delete(fillPath(item, { id: options.id }))
            options.announce(result?.message ?? t('common.done', { action: t('action.delete') }))
            options.onDone('delete', result)
          }
        })
      }
    }, t('action.delete')))
  }
  return buttons
}

/**
 * The fields of a record as a definition list, labelled from the catalogue where known.
 * @param {string} scope @param {Record<string, any>} record @param {string[]} skip
 * @param {Record<string, (value: any) => any>} [formatters]
 */
export function propertyList (scope, record, skip, formatters = {}) {
  const rows = []
  for (const [name, value] of Object.entries(record)) {
    if (skip.includes(name) || value === undefined || value === null || value === '') continue
    const shown = formatters[name] !== undefined ? formatters[name](value) : formatValue(scope, name, value)
    rows.push(h('div', { class: 'property' }, h('dt', null, describeField(scope, name, {}).label), h('dd', null, shown)))
  }
  return h('dl', { class: 'properties' }, rows)
}

/** Whether a property schema accepts null (so that clearing a field can be sent as null). @param {any} schema */
function acceptsNull (schema) {
  if (schema === undefined) return false
  if (schema.type === 'null' || (Array.isArray(schema.type) && schema.type.includes('null'))) return true
  return [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])].some(acceptsNull)
}

/**
 * An Edit button when the API offers `PATCH {base}/{id}`: a form generated
 * from that request's schema, filled with the current values; only what the
 * operator changed is sent.
 * @param {{
 *   api: import('../api.js').Api, document: any, base: string, id: string, values: Record<string, any>, scope: string, title: string,
 *   announce: (message: string) => void, onDone: () => void,
 *   fields?: () => Promise<{ info?: (path: string) => any, widgets?: Record<string, any> }>
 * }} options `fields` supplies pickers for some fields, loaded when the form opens
 */
export function editButton (options) {
  const path = `${options.base}/{id}`
  if (operation(options.document, 'patch', path) === undefined || !permits(options.document, 'patch', path, options.api.identity?.role)) return null
  const schema = jsonRequestSchema(options.document, 'patch', path) ?? { type: 'object', properties: {} }
  return h('button', {
    type: 'button',
    class: 'secondary',
    'data-action': 'edit',
    onclick: async () => {
      let extra = {}
      try {
        extra = await options.fields?.() ?? {}
      } catch (error) {
        options.announce(errorText(error))
        return
      }
      const form = schemaForm({ schema, document: options.document, scope: options.scope, values: options.values, ...extra })
      const before = form.read() ?? {}
      await dialog({
        title: options.title,
        body: form.element,
        confirm: t('common.save'),
        onConfirm: async () => {
          const after = form.read() ?? {}
          /** @type {Record<string, any>} */
          const changes = {}
          for (const name of new Set([...Object.keys(before), ...Object.keys(after)])) {
            if (JSON.stringify(after[name]) === JSON.stringify(before[name])) continue
            if (after[name] !== undefined) changes[name] = after[name]
            else if (acceptsNull(schema.properties?.[name])) changes[name] = null
          }
          if (Object.keys(changes).length === 0) return
          try {
            await options.api.patch(fillPath(path, { id: options.id }), changes)
          } catch (error) {
            if (/** @type {any} */ (error).errors?.length > 0) {
              form.showProblem(/** @type {any} */ (error))
              return false
            }
            throw error
          }
          options.announce(t('common.saved'))
          options.onDone()
        }
      })
    }
  }, t('action.edit'))
}

const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/

/**
 * A value of a record for reading: instants in local time, yes/no, nested objects as "label: value" pairs.
 * @param {string} scope @param {string} path @param {any} value
 * @returns {string}
 */
export function formatValue (scope, path, value) {
  if (typeof value === 'boolean') return value ? t('common.yes') : t('common.no')
  if (typeof value === 'string' && ISO_INSTANT.test(value)) return formatDateTime(value)
  if (typeof value === 'string' || typeof value === 'number') {
    const key = `enum.${scope}.${path}.${value}`
    return has(key) ? t(key) : String(value)
  }
  if (Array.isArray(value)) return value.length === 0 ? '—' : value.map(item => formatValue(scope, path, item)).join(', ')
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).map(([name, item]) => `${describeField(scope, `${path}.${name}`, {}).label}: ${formatValue(scope, `${path}.${name}`, item)}`).join('; ')
  }
  return String(value)
}
