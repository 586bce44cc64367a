// One push install: its settings, the progress of its run, and per host the
// credential that worked, every attempt with each credential's outcome and why
// it failed, and the device it enrolled as. Re-run or cancel from here.

import { h, replace, table } from '../dom.js'
import { formatDateTime, has, t } from '../i18n.js'
import { permits } from '../openapi.js'
import { countsList, dialog, errorBox, loading, progressBar, stateBadge } from './common.js'

/** While the run goes on, the page is read again this often. */
const REFRESH_MS = 2000

/** @param {string} reason */
function reasonText (reason) {
  return has(`push.reason.${reason}`) ? t(`push.reason.${reason}`) : reason
}

/** @param {any} host */
function attemptsOf (host) {
  if (host.attempts.length === 0) return h('span', { class: 'muted' }, '—')
  return h('details', null,
    h('summary', null, t('push.attemptCount', { count: host.attempts.length })),
    h('ol', { class: 'attempts' }, host.attempts.map((/** @type {any} */ attempt) => h('li', { 'data-reason': attempt.reason ?? '' },
      h('div', null, stateBadge(attempt.outcome ?? 'running'), ' ', attempt.reason !== undefined ? h('strong', null, reasonText(attempt.reason)) : null,
        attempt.exitCode !== undefined && attempt.exitCode !== null ? ` · ${t('push.exitCode', { code: attempt.exitCode })}` : '', ' · ', formatDateTime(attempt.startedAt)),
      attempt.detail !== undefined ? h('div', { class: 'small' }, attempt.detail) : null,
      attempt.credentials.length > 0
        ? h('ul', { class: 'small' }, attempt.credentials.map((/** @type {any} */ tried) => h('li', null, `${tried.credentialName ?? tried.credentialId}: `, h('strong', null, reasonText(tried.outcome)), tried.detail !== undefined ? ` — ${tried.detail}` : '')))
        : null,
      attempt.outputTail !== undefined ? h('pre', { class: 'output' }, attempt.outputTail) : null))))
}

/** @param {any} host */
function hostRow (host) {
  return h('tr', { 'data-host': host.host, 'data-state': host.state },
    h('th', { scope: 'row' }, host.host),
    h('td', null, stateBadge(host.state)),
    h('td', null, host.credentialName ?? '—'),
    h('td', null, host.deviceId !== undefined ? h('a', { href: `#/devices/${encodeURIComponent(host.deviceId)}` }, host.deviceId) : '—'),
    h('td', null, host.platform ?? '—'),
    h('td', null, host.message ?? '', host.rebootRequired === true ? h('div', { class: 'small' }, t('push.rebootRequired')) : null, host.nextAttemptAt !== undefined ? h('div', { class: 'small muted' }, t('push.nextAttempt', { at: formatDateTime(host.nextAttemptAt) })) : null),
    h('td', null, attemptsOf(host)))
}

/** @param {import('../main.js').ViewContext} context */
export async function renderPushDetail (context) {
  const { main, api, params, announce } = context
  const id = params.id
  const body = h('div', null, loading())
  const actions = h('div', { class: 'page-actions' })
  const title = h('h1', null, t('push.title'))
  replace(main, h('div', { class: 'page-head' }, title, actions), body)
  const document = await api.openapi().catch(() => undefined)
  const may = (/** @type {string} */ path) => permits(document, 'post', path, api.identity?.role)
  let timer

  /** @param {string} label @param {string} path @param {any} requestBody */
  const actionButton = (label, path, requestBody, danger = false) => h('button', {
    type: 'button',
    class: danger ? 'danger' : 'secondary',
    onclick: async () => {
      const confirmed = await dialog({
        title: label,
        body: h('p', null, label),
        confirm: label,
        danger,
        onConfirm: async () => { await api.post(path, requestBody) }
      })
      if (confirmed) {
        announce(t('common.done', { action: label }))
        await load()
      }
    }
  }, label)

  /** Names of what the push refers to by id: its package and credentials (a viewer may not read credentials: ids stay). */
  /** @type {Map<string, string>} */
  const names = new Map()
  const learnNames = async (/** @type {any} */ push) => {
    if (names.size > 0) return
    const [pkg, credentials] = await Promise.all([
      push.install.type === 'package' ? api.get(`/v1/packages/${encodeURIComponent(push.install.packageId)}`).catch(() => undefined) : undefined,
      api.get('/v1/credentials?limit=1000').catch(() => undefined)
    ])
    if (pkg !== undefined) names.set(pkg.id, `${pkg.name} ${pkg.version}`)
    for (const credential of credentials?.credentials ?? []) names.set(credential.id, credential.name)
  }

  const load = async () => {
    clearTimeout(timer)
    try {
      const push = await api.get(`/v1/push-installs/${encodeURIComponent(id)}?limit=1000`)
      await learnNames(push)
      replace(title, push.name)
      const running = push.status === 'queued' || push.status === 'running'
      const total = Object.values(push.counts).reduce((/** @type {number} */ sum, /** @type {number} */ count) => sum + count, 0)
      const done = push.counts.succeeded + push.counts.failed + push.counts.cancelled
      replace(actions,
        running && may('/v1/push-installs/{id}/cancel') ? actionButton(t('push.cancel'), `/v1/push-installs/${encodeURIComponent(id)}/cancel`, undefined, true) : null,
        !running && may('/v1/push-installs/{id}/runs') && push.counts.succeeded < total ? actionButton(t('push.rerunFailed'), `/v1/push-installs/${encodeURIComponent(id)}/runs`, { hosts: 'unfinished' }) : null,
        !running && may('/v1/push-installs/{id}/runs') ? actionButton(t('push.rerunAll'), `/v1/push-installs/${encodeURIComponent(id)}/runs`, { hosts: 'all' }) : null)
      replace(body,
        h('section', { class: 'panel' },
          h('dl', { class: 'properties' },
            h('div', { class: 'property' }, h('dt', null, t('push.status')), h('dd', null, stateBadge(push.status))),
            h('div', { class: 'property' }, h('dt', null, t('push.install')), h('dd', null, push.install.type === 'agent' ? t('push.installAgent') : names.get(push.install.packageId) ?? push.install.packageId)),
            h('div', { class: 'property' }, h('dt', null, t('push.credentials')), h('dd', null, h('ol', { class: 'small' }, push.credentialIds.map((/** @type {string} */ credentialId) => h('li', null, names.get(credentialId) ?? credentialId))))),
            h('div', { class: 'property' }, h('dt', null, t('push.run')), h('dd', null, String(push.run))),
            h('div', { class: 'property' }, h('dt', null, t('push.maxAttempts')), h('dd', null, String(push.maxAttempts))),
            h('div', { class: 'property' }, h('dt', null, t('push.reboot')), h('dd', null, t(`push.reboot.${push.reboot.policy}`))),
            h('div', { class: 'property' }, h('dt', null, t('push.created')), h('dd', null, `${formatDateTime(push.createdAt)} · ${push.createdBy}`))),
          h('div', { class: 'section-head' }, progressBar(total > 0 ? 100 * done / total : 0, t('push.progress')), countsList(push.counts))),
        table({
          caption: t('push.hostsCaption', { run: push.run }),
          columns: [t('push.host'), t('push.state'), t('push.credential'), t('push.device'), t('push.platform'), t('push.message'), t('push.attempts')],
          rows: push.hosts.map(hostRow),
          empty: t('push.noHosts')
        }))
      if (running) timer = setTimeout(load, REFRESH_MS)
    } catch (error) {
      replace(body, errorBox(error))
    }
  }
  await load()
  return () => { clearTimeout(timer) }
}
