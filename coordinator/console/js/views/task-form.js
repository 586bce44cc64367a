// The task form, generated from the request schema of POST /v1/tasks: every
// setting the API offers, with pickers for the package and the targets.

import { h, replace } from '../dom.js'
import { t } from '../i18n.js'
import { jsonRequestSchema } from '../openapi.js'
import { schemaForm } from '../schema-form.js'
import { errorBox, errorText, heading, loading } from './common.js'
import { TASK_FIELDS, taskWidgets } from './task-fields.js'

/** @param {import('../main.js').ViewContext} context */
export async function renderTaskForm (context) {
  const { main, api } = context
  replace(main, heading(t('taskForm.title')), loading())
  let document, packages, devices
  try {
    [document, { packages }, { devices }] = await Promise.all([api.openapi(), api.get('/v1/packages'), api.get('/v1/devices')])
  } catch (error) {
    replace(main, heading(t('taskForm.title')), errorBox(error))
    return
  }
  const schema = jsonRequestSchema(document, 'post', '/v1/tasks')
  if (schema === undefined) {
    replace(main, heading(t('taskForm.title')), errorBox(t('taskForm.unavailable')))
    return
  }
  const form = schemaForm({
    schema,
    document,
    scope: 'task',
    values: { packageId: context.query.get('packageId') ?? undefined },
    info: path => TASK_FIELDS[path],
    widgets: taskWidgets(packages, devices)
  })
  const submit = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', class: 'primary' }, t('taskForm.submit')))
  replace(main,
    heading(t('taskForm.title')),
    h('form', {
      class: 'panel task-form',
      novalidate: true,
      onsubmit: async (/** @type {SubmitEvent} */ event) => {
        event.preventDefault()
        form.clearErrors()
        submit.disabled = true
        try {
          const task = await api.post('/v1/tasks', form.read())
          context.announce(t('taskForm.created', { count: task.resolvedDevices ?? 0 }))
          context.navigate(`#/tasks/${encodeURIComponent(task.id)}`)
        } catch (error) {
          form.showProblem({ message: errorText(error), errors: /** @type {any} */ (error).errors ?? [] })
        } finally {
          submit.disabled = false
        }
      }
    },
    form.element,
    h('div', { class: 'form-actions' }, submit, h('a', { class: 'button secondary', href: '#/packages' }, t('common.cancel')))))
}
