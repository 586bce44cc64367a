// Push installs: the agent, or a package, installed over SSH on hosts without
// an agent. The list of push installs, and the form that starts one.

import { h, replace, table, uniqueId } from '../dom.js'
import { formatDateTime, t } from '../i18n.js'
import { permits } from '../openapi.js'
import { countsList, errorBox, errorText, heading, loading, stateBadge } from './common.js'

/** Kinds a push installs without an agent. */
const PUSHABLE = new Set(['deb', 'rpm', 'shell'])
/** While a push runs, the list is read again this often. */
const REFRESH_MS = 2000

/** @param {string} text */
function lines (text) {
  return text.split('\n').map(line => line.trim()).filter(line => line !== '')
}

/** @param {string} label @param {HTMLElement} field @param {string} [help] */
function labelled (label, field, help) {
  return h('div', { class: 'field' }, h('label', { for: field.id }, label), field, help !== undefined ? h('p', { class: 'help' }, help) : null)
}

/**
 * The form: hosts, credentials in the order they are tried, what to install,
 * attempts, reboot, SSH port and host-key fingerprints.
 * @param {import('../main.js').ViewContext} context @param {any[]} credentials @param {any[]} packages
 */
function pushForm (context, credentials, packages) {
  const { api, navigate } = context
  const errors = h('div', { class: 'form-errors', role: 'alert', hidden: true })
  const hosts = /** @type {HTMLTextAreaElement} */ (h('textarea', { id: uniqueId('push-hosts'), rows: 5, required: true, placeholder: '10.1.0.21\nbuild-7.example.org:2222' }))
  /** @type {string[]} credential ids, in the order they were ticked */
  const order = []
  const orderBadges = new Map()
  const credentialChecks = h('div', { class: 'checks', role: 'group', 'aria-label': t('push.credentials') }, credentials.map(credential => {
    const badge = h('span', { class: 'badge', 'data-order': credential.id })
    orderBadges.set(credential.id, badge)
    const box = /** @type {HTMLInputElement} */ (h('input', {
      type: 'checkbox',
      value: credential.id,
      onchange: () => {
        const at = order.indexOf(credential.id)
        if (box.checked && at < 0) order.push(credential.id)
        if (!box.checked && at >= 0) order.splice(at, 1)
        for (const [id, element] of orderBadges) replace(element, order.includes(id) ? String(order.indexOf(id) + 1) : '')
      }
    }))
    return h('label', { class: 'check' }, box, `${credential.name} (${credential.user}, ${t(`push.type.${credential.type}`)})`, ' ', badge)
  }))
  const agentChoice = /** @type {HTMLInputElement} */ (h('input', { type: 'radio', name: 'push-install', value: 'agent', checked: true }))
  const packageChoice = /** @type {HTMLInputElement} */ (h('input', { type: 'radio', name: 'push-install', value: 'package' }))
  const pushable = packages.filter(pkg => PUSHABLE.has(pkg.kind))
  const packageSelect = /** @type {HTMLSelectElement} */ (h('select', { id: uniqueId('push-package') }, pushable.map(pkg => h('option', { value: pkg.id }, `${pkg.name} ${pkg.version} (${pkg.kind})`))))
  const site = /** @type {HTMLInputElement} */ (h('input', { id: uniqueId('push-site'), type: 'text' }))
  const groups = /** @type {HTMLInputElement} */ (h('input', { id: uniqueId('push-groups'), type: 'text' }))
  const maxAttempts = /** @type {HTMLInputElement} */ (h('input', { id: uniqueId('push-attempts'), type: 'number', min: 1, max: 10, value: '3' }))
  const retryDelay = /** @type {HTMLInputElement} */ (h('input', { id: uniqueId('push-retry'), type: 'number', min: 0, value: '60' }))
  const reboot = /** @type {HTMLSelectElement} */ (h('select', { id: uniqueId('push-reboot') }, h('option', { value: 'never' }, t('push.reboot.never')), h('option', { value: 'always' }, t('push.reboot.always'))))
  const port = /** @type {HTMLInputElement} */ (h('input', { id: uniqueId('push-port'), type: 'number', min: 1, max: 65535, value: '22' }))
  const fingerprints = /** @type {HTMLTextAreaElement} */ (h('textarea', { id: uniqueId('push-keys'), rows: 2, placeholder: '10.1.0.21=SHA256:…' }))
  const submit = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', class: 'primary' }, t('push.start')))
  const agentFields = h('div', null, labelled(t('push.site'), site), labelled(t('push.groups'), groups, t('push.groupsHelp')))
  const packageField = labelled(t('push.package'), packageSelect, pushable.length === 0 ? t('push.noPackages') : t('push.packageHelp'))
  const showChoice = () => { agentFields.hidden = !agentChoice.checked; packageField.hidden = agentChoice.checked }
  agentChoice.addEventListener('change', showChoice)
  packageChoice.addEventListener('change', showChoice)
  showChoice()

  const form = h('form', {
    class: 'panel push-form',
    novalidate: true,
    onsubmit: async (/** @type {SubmitEvent} */ event) => {
      event.preventDefault()
      errors.hidden = true
      submit.disabled = true
      try {
        /** @type {Record<string, string>} */
        const hostKeyFingerprints = {}
        for (const line of lines(fingerprints.value)) {
          const at = line.lastIndexOf('=')
          if (at > 0) hostKeyFingerprints[line.slice(0, at).trim()] = line.slice(at + 1).trim()
        }
        const body = {
          hosts: lines(hosts.value),
          credentials: [...order],
          install: agentChoice.checked ? 'agent' : { packageId: packageSelect.value },
          ...(agentChoice.checked && (site.value.trim() !== '' || groups.value.trim() !== '')
            ? { agent: { ...(site.value.trim() !== '' ? { site: site.value.trim() } : {}), ...(groups.value.trim() !== '' ? { groups: groups.value.split(',').map(group => group.trim()).filter(group => group !== '') } : {}) } }
            : {}),
          maxAttempts: Number(maxAttempts.value),
          retryDelaySeconds: Number(retryDelay.value),
          reboot: reboot.value,
          port: Number(port.value),
          ...(Object.keys(hostKeyFingerprints).length > 0 ? { hostKeyFingerprints } : {})
        }
        const created = await api.post('/v1/push-installs', body)
        navigate(`#/push/${encodeURIComponent(created.id)}`)
      } catch (error) {
        const fields = /** @type {any} */ (error).errors ?? []
        replace(errors, errorText(error), fields.length > 0 ? h('ul', null, fields.map((/** @type {any} */ field) => h('li', null, `${field.path}: ${field.message}`))) : null)
        errors.hidden = false
      } finally {
        submit.disabled = false
      }
    }
  },
  h('h2', null, t('push.newTitle')),
  errors,
  labelled(t('push.hosts'), hosts, t('push.hostsHelp')),
  h('fieldset', { class: 'field field-group' }, h('legend', null, t('push.credentials')), credentials.length > 0 ? credentialChecks : h('p', { class: 'muted' }, t('push.noCredentials')), h('p', { class: 'help' }, t('push.credentialsHelp'))),
  h('fieldset', { class: 'field field-group' }, h('legend', null, t('push.install')),
    h('div', { class: 'checks' }, h('label', { class: 'check' }, agentChoice, t('push.installAgent')), h('label', { class: 'check' }, packageChoice, t('push.installPackage')))),
  agentFields,
  packageField,
  labelled(t('push.maxAttempts'), maxAttempts, t('push.maxAttemptsHelp')),
  labelled(t('push.retryDelay'), retryDelay),
  labelled(t('push.reboot'), reboot, t('push.rebootHelp')),
  labelled(t('push.port'), port),
  labelled(t('push.fingerprints'), fingerprints, t('push.fingerprintsHelp')),
  h('div', { class: 'form-actions' }, submit))
  return form
}

/** @param {any} push */
function pushRow (push) {
  return h('tr', { 'data-push': push.id, 'data-status': push.status },
    h('th', { scope: 'row' }, h('a', { href: `#/push/${encodeURIComponent(push.id)}` }, push.name)),
    h('td', null, stateBadge(push.status)),
    h('td', { class: 'num' }, String(push.hostCount)),
    h('td', { class: 'counts-cell' }, countsList(push.counts)),
    h('td', { class: 'num' }, String(push.run)),
    h('td', null, formatDateTime(push.createdAt)),
    h('td', null, push.createdBy))
}

/** @param {import('../main.js').ViewContext} context */
export async function renderPushInstalls (context) {
  const { main, api } = context
  const list = h('section', { 'aria-label': t('push.caption') }, loading())
  const formSlot = h('div')
  replace(main, heading(t('push.title')), h('p', { class: 'muted' }, t('push.intro')), list, formSlot)
  const document = await api.openapi().catch(() => undefined)
  if (permits(document, 'post', '/v1/push-installs', api.identity?.role)) {
    try {
      const [{ credentials }, { packages }] = await Promise.all([api.get('/v1/credentials'), api.get('/v1/packages')])
      replace(formSlot, pushForm(context, credentials, packages))
    } catch (error) {
      replace(formSlot, errorBox(error))
    }
  }
  let timer
  const load = async () => {
    try {
      const { pushInstalls } = await api.get('/v1/push-installs')
      replace(list, table({
        caption: t('push.caption'),
        captionHidden: true,
        columns: [t('push.name'), t('push.status'), { label: t('push.hostCount'), className: 'num' }, t('push.results'), { label: t('push.run'), className: 'num' }, t('push.created'), t('push.by')],
        rows: pushInstalls.map(pushRow),
        empty: t('push.empty')
      }))
      clearTimeout(timer)
      if (pushInstalls.some((/** @type {any} */ push) => push.status === 'queued' || push.status === 'running')) timer = setTimeout(load, REFRESH_MS)
    } catch (error) {
      replace(list, errorBox(error))
    }
  }
  await load()
  return () => { clearTimeout(timer) }
}
