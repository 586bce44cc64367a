// Devices: site, groups, platform, online state and last contact.

import { h, replace, table, uniqueId } from '../dom.js'
import { formatAgo, formatDateTime, t } from '../i18n.js'
import { throttled } from '../live.js'
import { errorBox, heading, loading, stateBadge } from './common.js'

/** Online state is judged by the coordinator from the last contact; this often it is read again. */
const ONLINE_REFRESH_MS = 30_000

/** @param {boolean} online */
export function onlineBadge (online) {
  return h('span', { class: `badge ${online ? 'online' : 'offline'}` }, online ? t('devices.online') : t('devices.offline'))
}

/** @param {import('../main.js').ViewContext} context */
export async function renderDevices (context) {
  const { main, api, live } = context
  const filterId = uniqueId('device-filter')
  const filter = /** @type {HTMLInputElement} */ (h('input', { id: filterId, type: 'search', autocomplete: 'off' }))
  const counts = h('p', { class: 'muted' })
  const list = h('section', { 'aria-label': t('devices.caption') }, loading())
  replace(main, heading(t('devices.title'), h('div', { class: 'inline-field' }, h('label', { for: filterId }, t('common.filter')), filter)), counts, list)
  /** @type {any[]} */
  let devices = []

  const draw = () => {
    const text = filter.value.trim().toLowerCase()
    const shown = devices.filter(device => text === '' || [device.hostname, device.site, device.platform, device.id, ...device.groups].some(value => String(value).toLowerCase().includes(text)))
    replace(counts, t('devices.summary', { count: devices.length, online: devices.filter(device => device.online).length }))
    replace(list, table({
      caption: t('devices.caption'),
      captionHidden: true,
      columns: [t('devices.hostname'), t('devices.site'), t('devices.groups'), t('devices.platform'), t('devices.state'), t('devices.lastContact'), t('devices.status')],
      rows: shown.map(device => h('tr', { 'data-device': device.id },
        h('th', { scope: 'row' }, h('a', { href: `#/devices/${encodeURIComponent(device.id)}` }, device.hostname)),
        h('td', null, device.site),
        h('td', null, device.groups.length > 0 ? device.groups.join(', ') : '—'),
        h('td', null, `${device.platform} / ${device.arch}`),
        h('td', null, onlineBadge(device.online)),
        h('td', { title: formatDateTime(device.lastSeenAt) }, formatAgo(device.lastSeenAt)),
        h('td', null, stateBadge(device.status)))),
      empty: text === '' ? t('devices.empty') : t('devices.noMatch')
    }))
  }
  filter.addEventListener('input', draw)

  const load = async () => {
    try {
      ({ devices } = await api.get('/v1/devices'))
      devices.sort((a, b) => a.hostname.localeCompare(b.hostname))
      draw()
    } catch (error) {
      replace(list, errorBox(error))
    }
  }
  const refresh = throttled(load, 1000)
  const stopEvents = live.subscribe(event => { if (event.type === 'device') refresh() })
  const stopReset = live.onReset(refresh)
  const timer = setInterval(refresh, ONLINE_REFRESH_MS)
  await load()
  return () => {
    stopEvents()
    stopReset()
    clearInterval(timer)
    refresh.cancel()
  }
}
