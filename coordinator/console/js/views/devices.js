// Devices: site, groups, platform, online state and last contact.

import { h, replace, table, uniqueId } from '../dom.js'
import { formatAgo, formatDateTime, t } from '../i18n.js'
import { throttled } from '../live.js'
import { errorBox, heading, loading, stateBadge } from './common.js'

/** Online state is judged by the coordinator from the last contact; this often it is read again. */
const ONLINE_REFRESH_MS = 30_000
/** Devices read per page, and at most in one request (the coordinator's maximum). */
const PAGE = 500
const MAX_PAGE = 5000

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
  const more = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary', 'data-action': 'show-more', hidden: true }, t('common.showMore')))
  replace(main, heading(t('devices.title'), h('div', { class: 'inline-field' }, h('label', { for: filterId }, t('common.filter')), filter)), counts, list, more)
  /** @type {any[]} */
  let devices = []
  /** @type {string | undefined} where the coordinator's listing goes on */
  let nextCursor
  /** @type {number | undefined} */
  let total

  const draw = () => {
    const text = filter.value.trim().toLowerCase()
    const shown = devices.filter(device => text === '' || [device.hostname, device.site, device.platform, device.id, ...device.groups].some(value => String(value).toLowerCase().includes(text)))
    const count = total ?? devices.length
    replace(counts, nextCursor !== undefined
      ? t('devices.partial', { shown: devices.length, count })
      : t('devices.summary', { count, online: devices.filter(device => device.online).length }))
    more.hidden = nextCursor === undefined
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

  /** The coordinator lists devices a page at a time; a refresh reads again as many as are shown. */
  const load = async () => {
    try {
      const wanted = Math.min(MAX_PAGE, Math.max(PAGE, devices.length))
      const page = await api.get(`/v1/devices?limit=${wanted}`)
      devices = page.devices
      nextCursor = page.nextCursor
      total = page.total
      devices.sort((a, b) => a.hostname.localeCompare(b.hostname))
      draw()
    } catch (error) {
      replace(list, errorBox(error))
    }
  }
  more.addEventListener('click', async () => {
    if (nextCursor === undefined) return
    more.disabled = true
    try {
      const page = await api.get(`/v1/devices?limit=${PAGE}&cursor=${encodeURIComponent(nextCursor)}`)
      devices = [...devices, ...page.devices].sort((a, b) => a.hostname.localeCompare(b.hostname))
      nextCursor = page.nextCursor
      total = page.total
      draw()
    } catch (error) {
      replace(list, errorBox(error))
    } finally {
      more.disabled = false
    }
  })
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
