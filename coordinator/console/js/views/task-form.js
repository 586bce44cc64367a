// The task form, generated from the request schema of POST /v1/tasks: every
// setting the API offers, with pickers for the package and the targets.

import { h, replace, uniqueId } from '../dom.js'
import { formatBytes, t } from '../i18n.js'
import { jsonRequestSchema } from '../openapi.js'
import { schemaForm } from '../schema-form.js'
import { errorBox, heading, loading } from './common.js'

/** Fields that get a picker instead of the generic control, by path. */
const TASK_FIELDS = {
  packageId: { widget: 'package' },
  'targets.deviceIds': { widget: 'devices' },
  'targets.groups': { widget: 'groups' },
  'targets.sites': { widget: 'sites' }
}

/**
 * Checkboxes for known values plus a text field for others.
 * @param {import('../schema-form.js').WidgetContext} context
 * @param {Array<{ value: string, label: string, detail?: string }>} choices
 * @param {{ filter?: boolean, other?: boolean }} [options]
 * @returns {import('../schema-form.js').Widget}
 */
function choiceList (context, choices, options = {}) {
  const chosen = new Set(Array.isArray(context.value) ? context.value : [])
  const boxes = choices.map(choice => {
    const id = uniqueId('choice')
    const box = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id, value: choice.value, checked: chosen.has(choice.value) }))
    const element = h('div', { class: 'check', 'data-label': choice.label.toLowerCase() }, box, h('label', { for: id }, choice.label, choice.detail !== undefined ? h('span', { class: 'muted small' }, ` ${choice.detail}`) : null))
    return { choice, box, element }
  })
  const list = h('div', { class: 'checks scroll' }, boxes.map(entry => entry.element), boxes.length === 0 ? h('p', { class: 'muted small' }, t('taskForm.noChoices')) : null)
  const filterId = uniqueId('filter')
  const filter = options.filter === true && boxes.length > 8
    ? h('div', { class: 'inline-field' }, h('label', { for: filterId }, t('common.filter')), h('input', {
        id: filterId,
        type: 'search',
        oninput: (/** @type {Event} */ event) => {
          const text = /** @type {HTMLInputElement} */ (event.target).value.toLowerCase()
          for (const entry of boxes) entry.element.hidden = text !== '' && !(entry.element.dataset.label ?? '').includes(text)
        }
      }))
    : null
  const otherId = uniqueId('other')
  const known = new Set(choices.map(choice => choice.value))
  const other = /** @type {HTMLInputElement} */ (h('input', { id: otherId, type: 'text', autocomplete: 'off', value: [...chosen].filter(value => !known.has(value)).join(', ') }))
  return {
    group: true,
    control: h('div', null, filter, list, options.other === true ? h('div', { class: 'inline-field' }, h('label', { for: otherId }, t('taskForm.others')), other) : null),
    read: () => {
      const values = boxes.filter(entry => entry.box.checked).map(entry => entry.choice.value)
      if (options.other === true) values.push(...other.value.split(',').map(value => value.trim()).filter(value => value !== ''))
      return values.length === 0 ? undefined : values
    },
    focus: () => { (boxes[0]?.box ?? other).focus() }
  }
}

/** @param {import('../main.js').ViewContext} context */
export async function renderTaskForm (context) {
  const { main, api } = context
  replace(main, heading(t('taskForm.title')), loading())
  let document, packages, devices
  try {
    [document, { packages }, { devices }] = await Promise.all([api.openapi(), api.get('/v1/packages'), api.get('/v1/devices')])
  } catch (error) {
    replace(main, heading(t('taskForm.title')), errorBox(error))
    return
  }
  const schema = jsonRequestSchema(document, 'post', '/v1/tasks')
  if (schema === undefined) {
    replace(main, heading(t('taskForm.title')), errorBox(t('taskForm.unavailable')))
    return
  }
  const names = (/** @type {(device: any) => string[]} */ pick) => [...new Set(devices.flatMap(pick))].sort().map(value => ({ value, label: value, detail: t('taskForm.deviceCount', { count: devices.filter((/** @type {any} */ device) => pick(device).includes(value)).length }) }))
  const form = schemaForm({
    schema,
    document,
    scope: 'task',
    values: { packageId: context.query.get('packageId') ?? undefined },
    info: path => /** @type {any} */ (TASK_FIELDS)[path],
    widgets: {
      package: field => {
        const select = /** @type {HTMLSelectElement} */ (h('select', { id: field.id, name: field.path },
          h('option', { value: '' }, t('taskForm.choosePackage')),
          packages.map((/** @type {any} */ pkg) => h('option', { value: pkg.id, selected: pkg.id === field.value }, `${pkg.name} ${pkg.version} (${pkg.kind}, ${formatBytes(pkg.sizeBytes)})`))))
        return { control: select, read: () => select.value === '' ? undefined : select.value }
      },
      devices: field => choiceList(field, devices.map((/** @type {any} */ device) => ({
        value: device.id,
        label: device.hostname,
        detail: `${device.site} · ${device.platform}${device.online ? '' : ` · ${t('devices.offline')}`}`
      })), { filter: true }),
      groups: field => choiceList(field, names(device => device.groups), { other: true }),
      sites: field => choiceList(field, names(device => [device.site]), { other: true })
    }
  })
  const submit = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', class: 'primary' }, t('taskForm.submit')))
  replace(main,
    heading(t('taskForm.title')),
    h('form', {
      class: 'panel task-form',
      novalidate: true,
      onsubmit: async (/** @type {SubmitEvent} */ event) => {
        event.preventDefault()
        form.clearErrors()
        submit.disabled = true
        try {
          const task = await api.post('/v1/tasks', form.read())
          context.announce(t('taskForm.created', { count: task.resolvedDevices ?? 0 }))
          context.navigate(`#/tasks/${encodeURIComponent(task.id)}`)
        } catch (error) {
          form.showProblem({ message: /** @type {any} */ (error).message, errors: /** @type {any} */ (error).errors ?? [] })
        } finally {
          submit.disabled = false
        }
      }
    },
    form.element,
    h('div', { class: 'form-actions' }, submit, h('a', { class: 'button secondary', href: '#/packages' }, t('common.cancel')))))
}
