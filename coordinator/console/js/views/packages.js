// Software: the package list, upload with progress, edit, delete, distribute.

import { h, replace, table } from '../dom.js'
import { formatBytes, formatDateTime, t } from '../i18n.js'
import { multipartRequestSchema, operation, permits, resourceActions } from '../openapi.js'
import { schemaForm } from '../schema-form.js'
import { actionButtons, editButton, errorBox, errorText, heading, loading } from './common.js'

/** Extra help and pickers for upload fields, by path. */
const UPLOAD_FIELDS = {}

/**
 * The upload form, built from the multipart schema of POST /v1/packages: JSON
 * parts (the metadata) become nested forms, binary parts file inputs, other
 * parts (a publisher signature, where the API asks for one) text fields.
 * @param {import('../main.js').ViewContext} context @param {any} document @param {() => void} onUploaded
 */
function uploadPanel (context, document, onUploaded) {
  const schema = multipartRequestSchema(document, 'post', '/v1/packages')
  if (schema === undefined) return null
  const encoding = operation(document, 'post', '/v1/packages')?.requestBody?.content?.['multipart/form-data']?.encoding ?? {}
  const required = new Set(schema.required ?? [])
  /** @type {Array<{ name: string, form: ReturnType<typeof schemaForm> }>} */
  const jsonParts = []
  /** @type {Record<string, any>} */
  const otherParts = {}
  for (const [name, part] of Object.entries(schema.properties ?? {})) {
    const isJson = encoding[name]?.contentType === 'application/json' || /** @type {any} */ (part).type === 'object' || /** @type {any} */ (part).oneOf !== undefined
    if (isJson) jsonParts.push({ name, form: schemaForm({ schema: part, document, scope: 'package', info: path => /** @type {any} */ (UPLOAD_FIELDS)[path] }) })
    else otherParts[name] = part
  }
  // Text parts first: the coordinator reads the metadata before the file streams in.
  const partNames = Object.keys(otherParts).sort((a, b) => Number(isBinary(otherParts[a])) - Number(isBinary(otherParts[b])))
  const partsForm = schemaForm({
    schema: { type: 'object', properties: Object.fromEntries(partNames.map(name => [name, otherParts[name]])), required: partNames.filter(name => required.has(name)) },
    document,
    scope: 'upload'
  })
  const progress = /** @type {HTMLProgressElement} */ (h('progress', { max: 100, value: 0, 'aria-label': t('packages.uploadProgress') }))
  const progressText = h('span', { class: 'progress-text' })
  const progressRow = h('div', { class: 'progress upload-progress', hidden: true }, progress, progressText)
  const submit = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', class: 'primary' }, t('packages.upload')))
  /** @type {AbortController | undefined} */
  let uploading
  const cancel = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary', hidden: true, onclick: () => { uploading?.abort() } }, t('packages.cancelUpload')))
  const form = h('form', {
    class: 'panel upload',
    novalidate: true,
    'aria-labelledby': 'upload-title',
    onsubmit: async (/** @type {SubmitEvent} */ event) => {
      event.preventDefault()
      for (const part of jsonParts) part.form.clearErrors()
      partsForm.clearErrors()
      const body = new FormData()
      for (const part of jsonParts) body.append(part.name, JSON.stringify(part.form.read() ?? {}))
      const values = partsForm.read() ?? {}
      for (const name of partNames) {
        const value = values[name]
        if (value === undefined) continue
        if (value instanceof File) body.append(name, value, value.name)
        else body.append(name, typeof value === 'string' ? value : JSON.stringify(value))
      }
      uploading = new AbortController()
      submit.disabled = true
      cancel.hidden = false
      progressRow.hidden = false
      progress.value = 0
      replace(progressText, '')
      try {
        const created = await context.api.upload('/v1/packages', body, {
          signal: uploading.signal,
          onProgress: (sent, total) => {
            progress.value = Math.round(100 * sent / total)
            replace(progressText, sent >= total ? t('packages.processing') : t('packages.sent', { sent: formatBytes(sent), total: formatBytes(total) }))
          }
        })
        context.announce(t('packages.uploaded', { name: created.name, version: created.version }))
        onUploaded()
      } catch (error) {
        progressRow.hidden = true
        const problem = { message: errorText(error), errors: /** @type {any} */ (error).errors ?? [] }
        if (/** @type {any} */ (error).name === 'AbortError') problem.message = t('packages.uploadCancelled')
        // The metadata's errors name its fields; the rest concern the other parts.
        if (jsonParts.length > 0) jsonParts[0].form.showProblem(problem)
        else partsForm.showProblem(problem)
      } finally {
        uploading = undefined
        submit.disabled = false
        cancel.hidden = true
      }
    }
  },
  h('h2', { id: 'upload-title' }, t('packages.uploadTitle')),
  jsonParts.map(part => part.form.element),
  partsForm.element,
  progressRow,
  h('div', { class: 'form-actions' }, submit, cancel))
  return form
}

/** @param {any} schema */
function isBinary (schema) {
  return schema?.contentMediaType === 'application/octet-stream' || schema?.format === 'binary'
}

/**
 * What a capture package changes, for review before it is distributed:
 * where it was captured, counts, the folders it touches most, its removals
 * and the system packages it needs.
 * @param {any} capture
 */
function captureContents (capture) {
  const { counts, source } = capture
  const more = (/** @type {number} */ total, /** @type {number} */ shown) => total > shown ? h('li', { class: 'muted' }, t('packages.captureMore', { count: total - shown })) : null
  return h('details', { class: 'capture-contents small' },
    h('summary', null, `${t('packages.captureContents')}: ${t('packages.captureCounts', { added: counts.added, modified: counts.modified, removed: counts.removed, metadata: counts.metadata, bytes: formatBytes(counts.contentBytes) })}`),
    h('p', null, t('packages.captureSource', { distribution: source.distribution, version: source.distributionVersion, family: source.family, os: source.os, arch: source.arch, roots: capture.roots.join(', ') })),
    table({
      caption: t('packages.captureFolders'),
      columns: [t('packages.captureFolder'), { label: t('packages.captureChanges'), className: 'num' }, { label: t('packages.captureBytes'), className: 'num' }],
      rows: capture.topFolders.map((/** @type {any} */ folder) => h('tr', null, h('td', null, h('code', null, folder.folder)), h('td', { class: 'num' }, String(folder.changes)), h('td', { class: 'num' }, formatBytes(folder.bytes)))),
      empty: '—'
    }),
    capture.removalsTotal === 0
      ? h('p', null, t('packages.captureNoRemovals'))
      : h('div', null, h('h3', null, t('packages.captureRemovals', { count: capture.removalsTotal })), h('ul', { class: 'capture-removals' }, capture.removals.map((/** @type {string} */ path) => h('li', null, h('code', null, path))), more(capture.removalsTotal, capture.removals.length))),
    capture.requiredPackagesTotal === 0
      ? null
      : h('div', null, h('h3', null, t('packages.captureNeeds', { count: capture.requiredPackagesTotal })), h('ul', null, capture.requiredPackages.map((/** @type {any} */ pkg) => h('li', null, `${pkg.name} ${pkg.version}`)), more(capture.requiredPackagesTotal, capture.requiredPackages.length))))
}

/** @param {import('../main.js').ViewContext} context */
export async function renderPackages (context) {
  const { main, api } = context
  const notice = h('div', { class: 'notice', role: 'status', hidden: true })
  const list = h('section', { 'aria-labelledby': 'packages-title' }, loading())
  const uploadSlot = h('div')
  // Usable once the API's description (what the upload form is built from) has arrived.
  const uploadButton = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'primary', 'aria-expanded': 'false', 'aria-controls': 'upload-slot', disabled: true }, t('packages.uploadTitle')))
  uploadSlot.id = 'upload-slot'
  replace(main, heading(t('packages.title'), uploadButton), notice, uploadSlot, list)
  let document
  try {
    document = await api.openapi()
  } catch (error) {
    replace(list, errorBox(error))
    return
  }
  const { remove } = resourceActions(document, '/v1/packages')
  const mayDistribute = permits(document, 'post', '/v1/tasks', api.identity?.role)

  const load = async () => {
    try {
      const { packages } = await api.get('/v1/packages')
      const rows = packages.map((/** @type {any} */ pkg) => h('tr', { 'data-package': pkg.id },
        h('th', { scope: 'row' }, pkg.name, pkg.description ? h('div', { class: 'muted small' }, pkg.description) : null, pkg.capture ? captureContents(pkg.capture) : null),
        h('td', null, pkg.version),
        h('td', null, pkg.kind),
        h('td', null, `${pkg.platform} / ${pkg.arch}`),
        h('td', { class: 'num' }, formatBytes(pkg.sizeBytes)),
        h('td', null, pkg.publisher ?? '—'),
        h('td', null, formatDateTime(pkg.createdAt)),
        h('td', { class: 'row-actions' },
          mayDistribute ? h('button', { type: 'button', class: 'primary small', 'data-action': 'distribute', onclick: () => { context.navigate(`#/tasks/new?packageId=${encodeURIComponent(pkg.id)}`) } }, t('packages.distribute')) : null,
          editButton({ api, document, base: '/v1/packages', id: pkg.id, values: pkg, scope: 'package', title: t('packages.editTitle', { name: pkg.name }), announce: context.announce, onDone: () => { void load() } }),
          actionButtons({
            api,
            document,
            base: '/v1/packages',
            id: pkg.id,
            announce: context.announce,
            deleteWarning: remove !== undefined ? t('packages.deleteWarning', { name: `${pkg.name} ${pkg.version}` }) : undefined,
            onDone: (name, result) => {
              if (name === 'delete') showDeleted(result)
              void load()
            }
          }))))
      replace(list, table({
        caption: t('packages.caption'),
        captionHidden: true,
        columns: [t('packages.name'), t('packages.version'), t('packages.kind'), t('packages.platform'), { label: t('packages.size'), className: 'num' }, t('packages.publisher'), t('packages.uploadedAt'), t('common.actions')],
        rows,
        empty: t('packages.empty')
      }))
    } catch (error) {
      replace(list, errorBox(error))
    }
  }

  /** What a delete did, as the API said: which unfinished tasks it cancelled. @param {any} result */
  const showDeleted = result => {
    const cancelled = Array.isArray(result?.cancelledTasks) ? result.cancelledTasks : []
    replace(notice,
      h('p', null, t(cancelled.length > 0 ? 'packages.deleted' : 'packages.deletedNone', { name: `${result?.deleted?.name ?? ''} ${result?.deleted?.version ?? ''}`.trim(), count: cancelled.length })),
      cancelled.length > 0 ? h('ul', null, cancelled.map((/** @type {string} */ id) => h('li', null, h('a', { href: `#/tasks/${encodeURIComponent(id)}` }, id)))) : null)
    notice.hidden = false
  }

  uploadButton.disabled = false
  uploadButton.hidden = !permits(document, 'post', '/v1/packages', api.identity?.role)
  uploadButton.addEventListener('click', () => {
    const open = uploadSlot.firstChild === null
    uploadButton.setAttribute('aria-expanded', String(open))
    if (!open) {
      replace(uploadSlot)
      return
    }
    const panel = uploadPanel(context, document, () => { replace(uploadSlot); uploadButton.setAttribute('aria-expanded', 'false'); void load() })
    replace(uploadSlot, panel ?? errorBox(t('packages.noUpload')))
    const first = /** @type {HTMLElement | null} */ (uploadSlot.querySelector('input, select, textarea'))
    first?.focus()
  })
  await load()
}
