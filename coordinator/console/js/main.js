// The console's shell: sign-in, navigation, language, the live connection,
// and the hash router that swaps views without reloading the page.

import { Api, storedToken, storeToken } from './api.js'
import { h, replace } from './dom.js'
import { LANGUAGES, currentLanguage, preferredLanguage, setLanguage, t } from './i18n.js'
import { LiveEvents } from './live.js'
import { renderSignIn } from './views/sign-in.js'
import { renderPackages } from './views/packages.js'
import { renderTaskForm } from './views/task-form.js'
import { renderTasks } from './views/tasks.js'
import { renderTaskDetail } from './views/task-detail.js'
import { renderDevices } from './views/devices.js'
import { renderDeviceDetail } from './views/device-detail.js'
import { renderPushInstalls } from './views/push-installs.js'
import { renderPushDetail } from './views/push-detail.js'

/**
 * @typedef {{
 *   api: Api, live: LiveEvents, main: HTMLElement, params: Record<string, string>, query: URLSearchParams,
 *   navigate: (hash: string) => void, announce: (message: string) => void
 * }} ViewContext
 * @typedef {(context: ViewContext) => (void | (() => void)) | Promise<void | (() => void)>} View
 */

/** @type {Array<[RegExp, View, string]>} pattern, view, navigation section */
const ROUTES = [
  [/^\/packages$/, renderPackages, 'packages'],
  [/^\/tasks\/new$/, renderTaskForm, 'tasks'],
  [/^\/tasks\/(?<id>[^/]+)$/, renderTaskDetail, 'tasks'],
  [/^\/tasks$/, renderTasks, 'tasks'],
  [/^\/devices\/(?<id>[^/]+)$/, renderDeviceDetail, 'devices'],
  [/^\/devices$/, renderDevices, 'devices'],
  [/^\/push\/(?<id>[^/]+)$/, renderPushDetail, 'push'],
  [/^\/push$/, renderPushInstalls, 'push']
]

const root = /** @type {HTMLElement} */ (document.getElementById('app'))
/** @type {{ api: Api, live: LiveEvents } | undefined} */
let session
/** @type {(() => void) | undefined} */
let cleanup
let renderCount = 0
/** Where the header names the signed-in token. */
let identity = h('span')

/** Why the operator is back at the sign-in form, when it was not their choice. */
let signOutNotice = ''

/** @param {string} [notice] */
function signOut (notice = '') {
  signOutNotice = notice
  storeToken(null)
  session?.live.stop()
  session = undefined
  location.hash = '#/'
  void show()
}

/** @param {string} token */
function startSession (token) {
  const api = new Api(token, () => { signOut(t('signIn.expired')) })
  const live = new LiveEvents(token, () => { signOut(t('signIn.expired')) })
  void live.run()
  session = { api, live }
}

/** @param {string} message */
function announce (message) {
  const region = document.getElementById('announcer')
  if (region === null) return
  replace(region, message)
}

/** @param {string} active */
function header (active) {
  const link = (/** @type {string} */ section, /** @type {string} */ hash) => h('a', { href: hash, 'aria-current': section === active ? 'page' : undefined }, t(`nav.${section}`))
  const languageId = 'language-select'
  const select = /** @type {HTMLSelectElement} */ (h('select', { id: languageId, onchange: async () => { await setLanguage(select.value, { remember: true }); await show() } },
    LANGUAGES.map(entry => h('option', { value: entry.code, selected: entry.code === currentLanguage(), lang: entry.code }, entry.name))))
  const liveBadge = h('span', { class: 'live-state', role: 'status' })
  identity = h('span', { class: 'identity muted small' })
  if (session !== undefined) {
    session.live.onState(state => {
      liveBadge.className = `live-state live-${state}`
      replace(liveBadge, t(`live.${state}`))
    })
  }
  return h('header', { class: 'top' },
    h('a', { class: 'brand', href: '#/tasks' }, h('img', { src: '/console/icon.svg', alt: '', width: 22, height: 22 }), ' meshdeploy'),
    session !== undefined ? h('nav', { 'aria-label': t('nav.label') }, link('packages', '#/packages'), link('tasks', '#/tasks'), link('devices', '#/devices'), link('push', '#/push')) : h('span'),
    h('div', { class: 'tools' },
      session !== undefined ? liveBadge : null,
      session !== undefined ? identity : null,
      h('label', { for: languageId, class: 'visually-hidden' }, t('nav.language')), select,
      session !== undefined ? h('button', { type: 'button', class: 'secondary', onclick: () => { signOut() } }, t('nav.signOut')) : null))
}

async function show () {
  cleanup?.()
  cleanup = undefined
  const render = ++renderCount
  const hash = location.hash.replace(/^#/, '') || '/'
  const [path, search = ''] = hash.split('?')
  if (session === undefined) {
    const token = storedToken()
    if (token !== null) startSession(token)
  }
  const main = h('main', { id: 'main', tabindex: '-1' })
  if (session === undefined) {
    replace(root, header(''), main, h('div', { id: 'announcer', class: 'visually-hidden', role: 'status', 'aria-live': 'polite' }))
    renderSignIn({
      main,
      notice: signOutNotice,
      onSignedIn: token => {
        signOutNotice = ''
        storeToken(token)
        startSession(token)
        if (path === '/' || path === '') location.hash = '#/tasks'
        else void show()
      }
    })
    return
  }
  const route = ROUTES.find(([pattern]) => pattern.test(path))
  if (route === undefined) {
    location.replace('#/tasks')
    return
  }
  const [pattern, view, section] = route
  const params = /** @type {Record<string, string>} */ ({ ...(pattern.exec(path)?.groups ?? {}) })
  for (const [name, value] of Object.entries(params)) params[name] = decodeURIComponent(value)
  replace(root, h('a', { class: 'skip', href: '#main', onclick: (/** @type {Event} */ event) => { event.preventDefault(); main.focus() } }, t('nav.skip')), header(section), main, h('div', { id: 'announcer', class: 'visually-hidden', role: 'status', 'aria-live': 'polite' }))
  const current = session
  // Which actions to offer depends on the token's role; learnt once per session.
  await current.api.whoAmI().catch(() => undefined)
  replace(identity, current.api.identity !== undefined ? t('nav.signedInAs', { name: current.api.identity.name, role: t(`role.${current.api.identity.role}`) }) : '')
  const result = await view({
    api: current.api,
    live: current.live,
    main,
    params,
    query: new URLSearchParams(search),
    navigate: target => { location.hash = target },
    announce
  })
  if (render !== renderCount) {
    if (typeof result === 'function') result()
    return
  }
  if (typeof result === 'function') cleanup = result
  const title = main.querySelector('h1')
  title?.setAttribute('tabindex', '-1')
  title?.focus({ preventScroll: true })
}

window.addEventListener('hashchange', () => { void show() })
await setLanguage(preferredLanguage())
await show()
