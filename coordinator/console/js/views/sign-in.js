// Sign-in with an operator token. The token is checked against the API and
// kept in sessionStorage: it is gone when the browser tab closes.

import { Api } from '../api.js'
import { h, replace } from '../dom.js'
import { t } from '../i18n.js'
import { errorText } from './common.js'

/** @param {{ main: HTMLElement, notice?: string, onSignedIn: (token: string) => void }} context */
export function renderSignIn (context) {
  const input = /** @type {HTMLInputElement} */ (h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, 'aria-describedby': 'token-help' }))
  const error = h('div', { class: 'error-box', role: 'alert', hidden: true })
  const submit = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', class: 'primary' }, t('signIn.submit')))
  const form = h('form', {
    class: 'sign-in',
    novalidate: true,
    onsubmit: async (/** @type {SubmitEvent} */ event) => {
      event.preventDefault()
      const token = input.value.trim()
      error.hidden = true
      if (token === '') {
        replace(error, t('signIn.empty'))
        error.hidden = false
        input.focus()
        return
      }
      submit.disabled = true
      try {
        // The OpenAPI document needs a token of any operator role: a cheap proof that this one works.
        await new Api(token, () => {}).get('/v1/openapi.json')
        context.onSignedIn(token)
      } catch (failure) {
        replace(error, /** @type {any} */ (failure).status === 401 ? t('signIn.refused') : errorText(failure))
        error.hidden = false
        input.focus()
      } finally {
        submit.disabled = false
      }
    }
  },
  h('h1', null, t('signIn.title')),
  h('p', null, t('signIn.intro')),
  context.notice ? h('div', { class: 'notice', role: 'status' }, context.notice) : null,
  error,
  h('div', { class: 'field' },
    h('label', { for: 'token' }, t('signIn.token')),
    input,
    h('p', { class: 'help', id: 'token-help' }, t('signIn.help'))),
  submit)
  replace(context.main, form)
  input.focus()
}
