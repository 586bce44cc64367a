// Pickers for the task settings that name things the coordinator knows
// (packages, devices, groups, sites), shared by the task form and task edits.

import { h, uniqueId } from '../dom.js'
import { formatBytes, t } from '../i18n.js'

/** Fields that get a picker instead of the generic control, by path. */
export const TASK_FIELDS = /** @type {Record<string, import('../schema-form.js').FieldInfo>} */ ({
  packageId: { widget: 'package' },
  'targets.deviceIds': { widget: 'devices' },
  'targets.groups': { widget: 'groups' },
  'targets.sites': { widget: 'sites' }
})

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

/**
 * @param {any[]} packages @param {any[]} unsorted devices
 * @returns {Record<string, import('../schema-form.js').WidgetFactory>}
 */
export function taskWidgets (packages, unsorted) {
  const devices = [...unsorted].sort((a, b) => a.hostname.localeCompare(b.hostname))
  const names = (/** @type {(device: any) => string[]} */ pick) => [...new Set(devices.flatMap(pick))].sort().map(value => ({ value, label: value, detail: t('taskForm.deviceCount', { count: devices.filter(device => pick(device).includes(value)).length }) }))
  return {
    package: field => {
      const select = /** @type {HTMLSelectElement} */ (h('select', { id: field.id, name: field.path },
        h('option', { value: '' }, t('taskForm.choosePackage')),
        packages.map(pkg => h('option', { value: pkg.id, selected: pkg.id === field.value }, `${pkg.name} ${pkg.version} (${pkg.kind}, ${formatBytes(pkg.sizeBytes)})`))))
      return { control: select, read: () => select.value === '' ? undefined : select.value }
    },
    devices: field => choiceList(field, devices.map(device => ({
      value: device.id,
      label: device.hostname,
      detail: `${device.site} · ${device.platform}${device.online ? '' : ` · ${t('devices.offline')}`}`
    })), { filter: true, other: true }),
    groups: field => choiceList(field, names(device => device.groups), { other: true }),
    sites: field => choiceList(field, names(device => [device.site]), { other: true })
  }
}
