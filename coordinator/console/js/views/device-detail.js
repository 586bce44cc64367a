// One device: its properties, the actions the API offers on it, and its task history.

import { h, replace, table } from '../dom.js'
import { formatAgo, formatBytes, formatDateTime, formatNumber, t } from '../i18n.js'
import { throttled } from '../live.js'
import { actionButtons, editButton, errorBox, heading, loading, propertyList, stateBadge } from './common.js'
import { onlineBadge } from './devices.js'

/**
 * Whether a lifecycle action the API offers makes sense for the device as it
 * is; actions not named here are always offered.
 * @param {string} name @param {any} device
 */
function actionApplies (name, device) {
  switch (name) {
    case 'block': return device.status === 'active'
    case 'unblock': return device.status === 'blocked'
    case 'retire': return device.status !== 'retired'
    default: return true
  }
}

/** @param {import('../main.js').ViewContext} context */
export async function renderDeviceDetail (context) {
  const { main, api, live, params } = context
  const id = params.id
  replace(main, heading(t('deviceDetail.title')), loading())
  let document
  try {
    document = await api.openapi()
  } catch (error) {
    replace(main, heading(t('deviceDetail.title')), errorBox(error))
    return
  }
  const load = async () => {
    let device
    try {
      device = await api.get(`/v1/devices/${encodeURIComponent(id)}`)
    } catch (error) {
      replace(main, heading(t('deviceDetail.title')), errorBox(error))
      return
    }
    const { tasks = [], ...properties } = device
    replace(main,
      heading(device.hostname, onlineBadge(device.online), editButton({
        api, document, base: '/v1/devices', id, values: properties, scope: 'device', title: t('deviceDetail.editTitle', { name: device.hostname }), announce: context.announce, onDone: refresh
      }), actionButtons({
        api,
        document,
        base: '/v1/devices',
        id,
        applies: name => actionApplies(name, device),
        announce: context.announce,
        onDone: name => {
          if (name === 'delete') context.navigate('#/devices')
          else refresh()
        }
      })),
      properties.sharedCredential !== undefined && properties.status === 'active'
        ? h('div', { class: 'error-box', role: 'alert', 'data-warning': 'shared-credential' }, t('deviceDetail.sharedCredential', {
          sessions: properties.sharedCredential.sessions,
          since: formatDateTime(properties.sharedCredential.detectedAt),
          addresses: properties.sharedCredential.addresses.join(', ')
        }))
        : null,
      h('section', { class: 'panel', 'aria-label': t('deviceDetail.properties') },
        propertyList('device', properties, ['hostname', 'online', 'publicKey', 'sharedCredential'], {
          groups: value => value.length > 0 ? value.join(', ') : '—',
          status: value => stateBadge(value),
          enrolledAt: formatDateTime,
          lastSeenAt: value => `${formatAgo(value)} (${formatDateTime(value)})`
        })),
      h('section', { 'aria-labelledby': 'device-tasks-title' },
        h('h2', { id: 'device-tasks-title' }, t('deviceDetail.history')),
        table({
          caption: t('deviceDetail.history'),
          captionHidden: true,
          columns: [t('tasks.name'), t('tasks.status'), t('taskDetail.state'), { label: t('taskDetail.attempt'), className: 'num' }, { label: t('taskDetail.exitCode'), className: 'num' }, { label: t('taskDetail.fromPeers'), className: 'num' }, { label: t('taskDetail.fromOrigin'), className: 'num' }, t('taskDetail.message'), t('deviceDetail.reportedAt')],
          rows: tasks.map((/** @type {any} */ row) => h('tr', { 'data-task': row.taskId, 'data-state': row.state },
            h('th', { scope: 'row' }, h('a', { href: `#/tasks/${encodeURIComponent(row.taskId)}` }, row.taskName ?? row.taskId)),
            h('td', null, stateBadge(row.taskStatus)),
            h('td', null, stateBadge(row.state)),
            h('td', { class: 'num' }, formatNumber(row.attempt)),
            h('td', { class: 'num' }, row.exitCode === undefined || row.exitCode === null ? '—' : String(row.exitCode)),
            h('td', { class: 'num' }, formatBytes(row.bytesFromPeers)),
            h('td', { class: 'num' }, formatBytes(row.bytesFromOrigin)),
            h('td', { class: 'message' }, row.message ?? ''),
            h('td', null, formatDateTime(row.reportedAt)))),
          empty: t('deviceDetail.noTasks')
        })))
  }
  const refresh = throttled(load, 1000)
  const stopEvents = live.subscribe(event => {
    if ((event.type === 'device' && event.data?.deviceId === id) || (event.type === 'status' && event.data?.deviceId === id)) refresh()
  })
  const stopReset = live.onReset(refresh)
  await load()
  return () => {
    stopEvents()
    stopReset()
    refresh.cancel()
  }
}
