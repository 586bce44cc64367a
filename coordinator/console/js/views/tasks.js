// Distribution records: every task with its progress, counts by state and the
// bytes the WAN was spared, kept current by the live event stream.

import { h, replace, table } from '../dom.js'
import { formatBytes, formatDateTime, formatPercent, t } from '../i18n.js'
import { throttled } from '../live.js'
import { permits } from '../openapi.js'
import { countsList, errorBox, heading, loading, progressBar, stateBadge } from './common.js'

/** Refreshes at most this often, however many events arrive. */
const REFRESH_SPACING_MS = 700
/** More tasks changed than this since the last refresh: the whole list is read instead. */
const MAX_SINGLE_READS = 10

/** @param {any} task */
function taskRow (task) {
  const progress = task.progress
  return h('tr', { 'data-task': task.id, 'data-status': task.status },
    h('th', { scope: 'row' }, h('a', { href: `#/tasks/${encodeURIComponent(task.id)}` }, task.name)),
    h('td', null, task.package !== null ? `${task.package.name} ${task.package.version}` : h('span', { class: 'muted' }, t('tasks.packageGone'))),
    h('td', null, stateBadge(task.status)),
    h('td', { class: 'progress-cell' }, progressBar(progress.percent, t('tasks.progressOf', { name: task.name }))),
    h('td', { class: 'counts-cell' }, countsList(progress.counts), h('div', { class: 'muted small' }, t('tasks.settledOf', { settled: progress.settled, total: progress.total }))),
    h('td', { class: 'num' }, formatBytes(progress.bytesFromPeers), progress.bytesFromPeers + progress.bytesFromOrigin > 0 ? h('div', { class: 'muted small' }, formatPercent(progress.peerShare)) : null),
    h('td', { class: 'num' }, formatBytes(progress.bytesFromOrigin)),
    h('td', null, formatDateTime(task.createdAt)))
}

/** @param {import('../main.js').ViewContext} context */
export async function renderTasks (context) {
  const { main, api, live } = context
  const summary = h('div', { class: 'summary', 'aria-live': 'off' })
  const list = h('section', { 'aria-label': t('tasks.caption') }, loading())
  const mayCreate = permits(await api.openapi().catch(() => undefined), 'post', '/v1/tasks', api.identity?.role)
  replace(main, heading(t('tasks.title'), mayCreate ? h('a', { class: 'button primary', href: '#/tasks/new' }, t('tasks.new')) : null), summary, list)

  /** @type {any[]} */
  let tasks = []
  const draw = () => {
    const saved = tasks.reduce((sum, task) => sum + task.progress.bytesFromPeers, 0)
    const origin = tasks.reduce((sum, task) => sum + task.progress.bytesFromOrigin, 0)
    replace(summary,
      h('div', { class: 'stat' }, h('span', { class: 'stat-value' }, String(tasks.filter(task => task.status === 'active').length)), h('span', { class: 'stat-label' }, t('tasks.activeTasks'))),
      h('div', { class: 'stat' }, h('span', { class: 'stat-value', 'data-stat': 'saved' }, formatBytes(saved)), h('span', { class: 'stat-label' }, t('tasks.savedOnWan'))),
      h('div', { class: 'stat' }, h('span', { class: 'stat-value' }, formatBytes(origin)), h('span', { class: 'stat-label' }, t('tasks.fromOrigin'))))
    replace(list, table({
      caption: t('tasks.caption'),
      captionHidden: true,
      columns: [t('tasks.name'), t('tasks.package'), t('tasks.status'), t('tasks.progress'), t('tasks.devices'), { label: t('tasks.savedOnWan'), className: 'num' }, { label: t('tasks.fromOrigin'), className: 'num' }, t('tasks.created')],
      rows: tasks.map(taskRow),
      empty: t('tasks.empty')
    }))
  }
  const loadAll = async () => {
    ({ tasks } = await api.get('/v1/tasks'))
  }

  // Device reports touch one task each: those tasks are read again, the list only when tasks come or go.
  /** @type {Set<string>} */
  const changed = new Set()
  let everything = true
  const load = async () => {
    const ids = [...changed]
    const whole = everything || ids.length > MAX_SINGLE_READS || ids.some(id => !tasks.some(task => task.id === id))
    changed.clear()
    everything = false
    try {
      if (whole) {
        await loadAll()
      } else {
        const views = await Promise.all(ids.map(id => api.get(`/v1/tasks/${encodeURIComponent(id)}`)))
        tasks = tasks.map(task => views.find(view => view.id === task.id) ?? task)
      }
      draw()
    } catch (error) {
      everything = true
      replace(list, errorBox(error))
    }
  }
  const refresh = throttled(load, REFRESH_SPACING_MS)
  const stopEvents = live.subscribe(event => {
    if (event.type === 'status' && event.taskId !== undefined) changed.add(event.taskId)
    else if (event.type === 'task') everything = true
    else return
    refresh()
  })
  const readAll = () => { everything = true; refresh() }
  const stopReset = live.onReset(readAll)
  // Coming back after a cut: what changed meanwhile was replayed, but a fresh read costs little.
  const stopState = live.onState(state => { if (state === 'live') readAll() })
  await load()
  return () => {
    stopEvents()
    stopReset()
    stopState()
    refresh.cancel()
  }
}
