// One task: its settings, progress, the actions the API offers on it, and a
// row per device, kept current by the live event stream.

import { h, replace, table, uniqueId } from '../dom.js'
import { formatAgo, formatBytes, formatDateTime, formatNumber, has, t } from '../i18n.js'
import { throttled } from '../live.js'
import { TASK_FIELDS, taskWidgets } from './task-fields.js'
import { actionButtons, countsList, editButton, errorBox, heading, loading, progressBar, propertyList, stateBadge } from './common.js'

const REFRESH_SPACING_MS = 500
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
    h('td', null, stateBadge(row.state), row.retryAt !== undefined && row.state === 'failed' && row.final !== true ? h('div', { class: 'muted small' }, t('taskDetail.retryAt', { time: formatDateTime(new Date(row.retryAt).toISOString()) })) : null),
    h('td', { class: 'progress-cell' }, progressBar(rowPercent(row), t('taskDetail.progressOf', { name: row.hostname }))),
    h('td', { class: 'num' }, formatBytes(row.bytesFromPeers)),
    h('td', { class: 'num' }, formatBytes(row.bytesFromOrigin)),
    h('td', { class: 'num' }, formatNumber(row.attempt)),
    h('td', { class: 'num' }, row.exitCode === undefined || row.exitCode === null ? '—' : String(row.exitCode)),
    h('td', { class: 'message' }, row.message ?? ''),
    h('td', { title: formatDateTime(row.lastSeenAt) }, formatAgo(row.lastSeenAt)))
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
  const filterId = uniqueId('state-filter')
  const filter = /** @type {HTMLSelectElement} */ (h('select', { id: filterId }))
  const rowsSlot = h('div')
  const devicesSection = h('section', { 'aria-labelledby': 'task-devices-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'task-devices-title' }, t('taskDetail.devices')), h('div', { class: 'inline-field' }, h('label', { for: filterId }, t('taskDetail.filter')), filter)),
    rowsSlot)
  replace(main, head, overview, devicesSection)
  /** @type {any[]} */
  let rows = []

  const drawRows = () => {
    const wanted = filter.value
    const shown = wanted === '' ? rows : rows.filter(row => row.state === wanted)
    replace(rowsSlot, table({
      caption: t('taskDetail.devices'),
      captionHidden: true,
      columns: [t('taskDetail.device'), t('devices.site'), t('taskDetail.state'), t('tasks.progress'), { label: t('taskDetail.fromPeers'), className: 'num' }, { label: t('taskDetail.fromOrigin'), className: 'num' }, { label: t('taskDetail.attempt'), className: 'num' }, { label: t('taskDetail.exitCode'), className: 'num' }, t('taskDetail.message'), t('taskDetail.lastHeard')],
      rows: shown.map(deviceRow),
      empty: wanted === '' ? t('taskDetail.noDevices') : t('taskDetail.noneInState')
    }))
  }
  filter.addEventListener('change', drawRows)

  const load = async () => {
    let task
    try {
      [task, { devices: rows }] = await Promise.all([api.get(`/v1/tasks/${encodeURIComponent(id)}`), api.get(`/v1/tasks/${encodeURIComponent(id)}/devices`)])
    } catch (error) {
      replace(overview, errorBox(error))
      return
    }
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
      propertyList('task', { status: task.status, package: task.package, ...task }, ['id', 'name', 'progress', 'manifest', 'packageId'], {
        status: value => stateBadge(value),
        action: value => has(`enum.task.action.${value}`) ? t(`enum.task.action.${value}`) : value,
        package: value => value === null ? t('tasks.packageGone') : `${value.name} ${value.version} (${formatBytes(value.sizeBytes)})`,
        targets: describeTargets,
        runArgs: value => Array.isArray(value) ? (value.length === 0 ? '—' : value.join(' ')) : String(value),
        bandwidthKBps: value => `${formatNumber(value)} KB/s`
      }))
    const chosen = filter.value
    const states = Object.keys(progress.counts ?? {}).sort()
    replace(filter, h('option', { value: '' }, t('taskDetail.allStates', { count: rows.length })),
      states.map(state => h('option', { value: state, selected: state === chosen }, `${has(`state.${state}`) ? t(`state.${state}`) : state} (${progress.counts[state]})`)))
    if (chosen !== '' && !states.includes(chosen)) filter.value = ''
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
