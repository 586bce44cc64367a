// One task: its settings, progress, the actions the API offers on it, and a
// row per device, kept current by the live event stream.

import { h, replace, table, uniqueId } from '../dom.js'
import { formatAgo, formatBytes, formatDateTime, formatNumber, has, t } from '../i18n.js'
import { throttled } from '../live.js'
import { TASK_FIELDS, taskWidgets } from './task-fields.js'
import { actionButtons, countsList, dialog, editButton, errorBox, heading, loading, progressBar, propertyList, stateBadge } from './common.js'
import { permits } from '../openapi.js'

const REFRESH_SPACING_MS = 500
/** Device rows read per page, and at most in one request (the coordinator's maximum). */
const PAGE = 500
const MAX_PAGE = 5000

/** @param {any} a @param {any} b */
function byHostname (a, b) {
  return String(a.hostname).localeCompare(String(b.hostname))
}
const SETTLED = new Set(['succeeded', 'succeeded-reboot-pending', 'already-installed', 'not-applicable', 'cancelled', 'expired'])

/** @param {any} row */
function rowPercent (row) {
  if (SETTLED.has(row.state) || (row.state === 'failed' && row.final === true)) return 100
  return row.bytesTotal > 0 ? 100 * row.bytesDone / row.bytesTotal : 0
}

/**
 * Whether an action the API offers makes sense for the task as it is: no
 * pausing a paused task, no re-running without failures. Actions not named
 * here are always offered; the coordinator has the last word either way.
 * @param {string} name @param {any} task
 */
function actionApplies (name, task) {
  const finished = task.status === 'cancelled' || task.status === 'deleted' || task.phase === 'expired'
  switch (name) {
    case 'pause': return task.status !== 'paused' && !finished
    case 'resume': return task.status === 'paused'
    case 'cancel': return !finished
    case 'rerun': return (task.progress?.failed ?? 0) > 0 && !finished
    case 'halt': return task.halted === undefined && !finished
    default: return true
  }
}

/** @param {any} targets */
function describeTargets (targets) {
  if (targets?.all === true) return t('targets.all')
  const parts = []
  for (const [name, values] of Object.entries(targets ?? {})) {
    if (!Array.isArray(values) || values.length === 0) continue
    parts.push(`${has(`targets.${name}`) ? t(`targets.${name}`) : name}: ${values.join(', ')}`)
  }
  return parts.join('; ')
}

/** @param {any} row */
function deviceRow (row) {
  return h('tr', { 'data-device': row.deviceId, 'data-state': row.state },
    h('th', { scope: 'row' }, h('a', { href: `#/devices/${encodeURIComponent(row.deviceId)}` }, row.hostname)),
    h('td', null, row.site),
    h('td', null, stateBadge(row.state), row.retryAt !== undefined && row.state === 'failed' && row.final !== true ? h('div', { class: 'muted small' }, t('taskDetail.retryAt', { time: formatDateTime(new Date(row.retryAt).toISOString()) })) : null,
      row.windowAt !== undefined && (row.state === 'waiting-for-window' || row.state === 'succeeded-reboot-pending') ? h('div', { class: 'muted small' }, t('taskDetail.windowAt', { time: formatDateTime(new Date(row.windowAt).toISOString()) })) : null),
    h('td', { class: 'progress-cell' }, progressBar(rowPercent(row), t('taskDetail.progressOf', { name: row.hostname }))),
    h('td', { class: 'num' }, formatBytes(row.bytesFromPeers)),
    h('td', { class: 'num' }, formatBytes(row.bytesFromOrigin)),
    h('td', { class: 'num' }, formatNumber(row.attempt)),
    h('td', { class: 'num' }, row.exitCode === undefined || row.exitCode === null ? '—' : String(row.exitCode)),
    h('td', { class: 'message' }, row.message ?? ''),
    h('td', { title: formatDateTime(row.lastSeenAt) }, formatAgo(row.lastSeenAt)))
}

/**
 * The rings of a phased rollout with their progress, and a button that starts the next one.
 * @param {any} task @param {{ api: any, document: any, onNext: () => Promise<void> }} options
 */
function ringsSection (task, options) {
  if (!Array.isArray(task.rings)) return null
  const active = task.rings.findIndex(/** @param {any} ring */ ring => ring.status === 'active')
  const finished = task.status === 'cancelled' || task.status === 'deleted' || task.phase === 'expired'
  const path = '/v1/tasks/{id}/phases/next'
  const next = !finished && active >= 0 && active < task.rings.length - 1 && permits(options.document, 'post', path, options.api.identity?.role)
    ? h('button', { type: 'button', class: 'secondary', 'data-action': 'next-phase', onclick: options.onNext }, t('taskDetail.nextPhase'))
    : null
  return h('section', { class: 'panel', 'aria-labelledby': 'task-rings-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'task-rings-title' }, t('taskDetail.rings')), next),
    task.halted !== undefined ? h('p', { class: 'field-error', role: 'status' }, t('taskDetail.halted', { time: formatDateTime(task.halted.at), reason: task.halted.reason })) : null,
    table({
      caption: t('taskDetail.rings'),
      captionHidden: true,
      columns: [t('taskDetail.ring'), t('taskDetail.ringStatus'), { label: t('taskDetail.ringDevices'), className: 'num' }, t('tasks.progress'), { label: t('taskDetail.ringSucceeded'), className: 'num' }, { label: t('taskDetail.ringFailed'), className: 'num' }, t('taskDetail.ringThresholds'), t('taskDetail.ringStarted'), t('taskDetail.ringSoak')],
      rows: task.rings.map(/** @param {any} ring */ ring => h('tr', { 'data-ring': String(ring.index), 'data-status': ring.status },
        h('th', { scope: 'row' }, ring.name),
        h('td', null, t(`ring.status.${ring.status}`)),
        h('td', { class: 'num' }, formatNumber(ring.total)),
        h('td', { class: 'progress-cell' }, progressBar(ring.percentSucceeded, ring.name)),
        h('td', { class: 'num' }, `${formatNumber(ring.succeeded)} (${ring.percentSucceeded}%)`),
        h('td', { class: 'num' }, `${formatNumber(ring.failed)} (${ring.percentFailed}%)`),
        h('td', null, `${ring.successPercent}% / ${ring.maxFailurePercent}%`),
        h('td', null, ring.startedAt !== undefined ? formatDateTime(ring.startedAt) : '—'),
        h('td', null, ring.soakUntil !== undefined ? formatDateTime(ring.soakUntil) : '—'))),
      empty: ''
    }))
}

/** @param {import('../main.js').ViewContext} context */
export async function renderTaskDetail (context) {
  const { main, api, live, params } = context
  const id = params.id
  replace(main, heading(t('taskDetail.title')), loading())
  let document
  try {
    document = await api.openapi()
  } catch (error) {
    replace(main, heading(t('taskDetail.title')), errorBox(error))
    return
  }
  const head = h('div')
  const overview = h('section', { class: 'panel overview', 'aria-label': t('taskDetail.overview') })
  const ringsSlot = h('div')
  const filterId = uniqueId('state-filter')
  const filter = /** @type {HTMLSelectElement} */ (h('select', { id: filterId }))
  const rowsSlot = h('div')
  const more = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary', 'data-action': 'show-more', hidden: true }, t('common.showMore')))
  const devicesSection = h('section', { 'aria-labelledby': 'task-devices-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'task-devices-title' }, t('taskDetail.devices')), h('div', { class: 'inline-field' }, h('label', { for: filterId }, t('taskDetail.filter')), filter)),
    rowsSlot, more)
  replace(main, head, overview, ringsSlot, devicesSection)
  /** @type {any[]} */
  let rows = []
  /** @type {string | undefined} where the coordinator's listing of rows goes on */
  let nextCursor

  const drawRows = () => {
    const wanted = filter.value
    more.hidden = nextCursor === undefined
    replace(rowsSlot, table({
      caption: t('taskDetail.devices'),
      captionHidden: true,
      columns: [t('taskDetail.device'), t('devices.site'), t('taskDetail.state'), t('tasks.progress'), { label: t('taskDetail.fromPeers'), className: 'num' }, { label: t('taskDetail.fromOrigin'), className: 'num' }, { label: t('taskDetail.attempt'), className: 'num' }, { label: t('taskDetail.exitCode'), className: 'num' }, t('taskDetail.message'), t('taskDetail.lastHeard')],
      rows: rows.map(deviceRow),
      empty: wanted === '' ? t('taskDetail.noDevices') : t('taskDetail.noneInState')
    }))
  }

  /**
   * The task's device rows, a page at a time, of the state the filter names
   * (the coordinator filters); a refresh reads again as many as are shown.
   * @param {string | undefined} cursor
   */
  const rowsPath = cursor => {
    const query = new URLSearchParams({ limit: String(cursor === undefined ? Math.min(MAX_PAGE, Math.max(PAGE, rows.length)) : PAGE) })
    if (filter.value !== '') query.set('state', filter.value)
    if (cursor !== undefined) query.set('cursor', cursor)
    return `/v1/tasks/${encodeURIComponent(id)}/devices?${query.toString()}`
  }
  const loadRows = async () => {
    try {
      const page = await api.get(rowsPath(undefined))
      rows = page.devices.sort(byHostname)
      nextCursor = page.nextCursor
      drawRows()
    } catch (error) {
      replace(rowsSlot, errorBox(error))
    }
  }
  filter.addEventListener('change', () => {
    rows = []
    void loadRows()
  })
  more.addEventListener('click', async () => {
    if (nextCursor === undefined) return
    more.disabled = true
    try {
      // Pages of a filtered listing may be short: read on until some rows come or the listing ends.
      let page
      do {
        page = await api.get(rowsPath(nextCursor))
        nextCursor = page.nextCursor
        rows = [...rows, ...page.devices].sort(byHostname)
      } while (page.devices.length === 0 && nextCursor !== undefined)
      drawRows()
    } catch (error) {
      replace(rowsSlot, errorBox(error))
    } finally {
      more.disabled = false
    }
  })

  const load = async () => {
    let task
    let page
    try {
      [task, page] = await Promise.all([api.get(`/v1/tasks/${encodeURIComponent(id)}`), api.get(rowsPath(undefined))])
    } catch (error) {
      replace(overview, errorBox(error))
      return
    }
    rows = page.devices.sort(byHostname)
    nextCursor = page.nextCursor
    replace(head, heading(task.name, editButton({
      api,
      document,
      base: '/v1/tasks',
      id,
      values: task,
      scope: 'task',
      title: t('taskDetail.editTitle', { name: task.name }),
      announce: context.announce,
      onDone: refresh,
      fields: async () => {
        const [{ packages }, { devices }] = await Promise.all([api.get('/v1/packages'), api.get('/v1/devices')])
        return { info: (/** @type {string} */ path) => TASK_FIELDS[path], widgets: taskWidgets(packages, devices) }
      }
    }), actionButtons({
      applies: name => actionApplies(name, task),
      api,
      document,
      base: '/v1/tasks',
      id,
      announce: context.announce,
      deleteWarning: t('taskDetail.deleteWarning'),
      onDone: name => {
        if (name === 'delete') context.navigate('#/tasks')
        else refresh()
      }
    })))
    const progress = task.progress
    replace(overview,
      h('div', { class: 'overview-progress' },
        progressBar(progress.percent, t('tasks.progressOf', { name: task.name })),
        countsList(progress.counts),
        h('p', { class: 'muted small' }, t('taskDetail.bytes', { peers: formatBytes(progress.bytesFromPeers), origin: formatBytes(progress.bytesFromOrigin) }))),
      propertyList('task', { status: task.status, package: task.package, ...task }, ['id', 'name', 'progress', 'manifest', 'packageId', 'rings', 'rollout', 'phases', 'halted'], {
        status: value => stateBadge(value),
        action: value => has(`enum.task.action.${value}`) ? t(`enum.task.action.${value}`) : value,
        package: value => value === null ? t('tasks.packageGone') : `${value.name} ${value.version} (${formatBytes(value.sizeBytes)})`,
        targets: describeTargets,
        runArgs: value => Array.isArray(value) ? (value.length === 0 ? '—' : value.join(' ')) : String(value),
        bandwidthKBps: value => `${formatNumber(value)} KB/s`
      }))
    replace(ringsSlot, ringsSection(task, {
      api,
      document,
      onNext: async () => {
        await dialog({
          title: t('taskDetail.nextPhase'),
          body: [h('p', null, t('confirm.nextPhase'))],
          confirm: t('taskDetail.nextPhase'),
          danger: false,
          onConfirm: async () => {
            await api.post(`/v1/tasks/${encodeURIComponent(id)}/phases/next`)
            context.announce(t('common.done', { action: t('taskDetail.nextPhase') }))
            refresh()
          }
        })
      }
    }))
    const chosen = filter.value
    const states = Object.keys(progress.counts ?? {}).sort()
    replace(filter, h('option', { value: '' }, t('taskDetail.allStates', { count: progress.total })),
      [...new Set([...states, ...(chosen !== '' ? [chosen] : [])])].map(state => h('option', { value: state, selected: state === chosen }, `${has(`state.${state}`) ? t(`state.${state}`) : state} (${progress.counts[state] ?? 0})`)))
    filter.value = chosen
    drawRows()
  }
  const refresh = throttled(load, REFRESH_SPACING_MS)
  const stopEvents = live.subscribe(event => {
    if (event.taskId === id || (event.type === 'device' && rows.some(row => row.deviceId === event.data?.deviceId))) refresh()
  })
  const stopReset = live.onReset(refresh)
  await load()
  return () => {
    stopEvents()
    stopReset()
    refresh.cancel()
  }
}
