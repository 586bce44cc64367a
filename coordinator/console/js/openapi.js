// Reading the coordinator's OpenAPI document: which operations exist, and the
// JSON schemas of their requests. The console builds forms and actions from
// it, so settings and actions the API gains appear without console changes.

/**
 * @param {any} document
 * @param {string} method lower case
 * @param {string} path OpenAPI form, e.g. `/v1/tasks/{id}`
 */
export function operation (document, method, path) {
  return document?.paths?.[path]?.[method]
}

/**
 * The JSON request body schema of an operation, or undefined.
 * @param {any} document @param {string} method @param {string} path
 */
export function jsonRequestSchema (document, method, path) {
  return operation(document, method, path)?.requestBody?.content?.['application/json']?.schema
}

/**
 * The multipart request schema of an operation (its parts as properties), or undefined.
 * @param {any} document @param {string} method @param {string} path
 */
export function multipartRequestSchema (document, method, path) {
  return operation(document, method, path)?.requestBody?.content?.['multipart/form-data']?.schema
}

/**
 * Follows `$ref`s to `#/$defs/…` (inside `root`) and `#/components/schemas/…` (inside the document).
 * @param {any} schema @param {any} root @param {any} [document]
 * @returns {any}
 */
export function resolveSchema (schema, root, document) {
  let current = schema
  for (let depth = 0; depth < 16 && typeof current?.$ref === 'string'; depth++) {
    const ref = current.$ref
    const base = ref.startsWith('#/components/') ? document : root
    const target = ref.slice(2).split('/').reduce((node, part) => node?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], base)
    const { $ref, ...rest } = current
    void $ref
    current = { ...target, ...rest }
  }
  return current
}

/**
 * Actions on one resource the API offers: `POST {base}/{id}/{action}` operations,
 * `PATCH {base}/{id}` (edit) and `DELETE {base}/{id}`.
 * @param {any} document @param {string} base e.g. `/v1/tasks`
 * @returns {{ actions: Array<{ name: string, path: string, summary: string, schema: any, bodyRequired: boolean }>, edit: any, remove: any }}
 */
export function resourceActions (document, base) {
  const item = `${base}/{id}`
  const actions = []
  for (const [path, operations] of Object.entries(document?.paths ?? {})) {
    const match = path.startsWith(item + '/') ? path.slice(item.length + 1) : undefined
    if (match === undefined || match.includes('/') || match.includes('{')) continue
    const post = /** @type {any} */ (operations).post
    if (post === undefined) continue
    actions.push({
      name: match,
      path,
      summary: post.summary ?? match,
      schema: post.requestBody?.content?.['application/json']?.schema,
      bodyRequired: post.requestBody?.required === true
    })
  }
  return { actions, edit: operation(document, 'patch', item), remove: operation(document, 'delete', item) }
}

/**
 * Fills `{id}` style parameters of an OpenAPI path.
 * @param {string} path @param {Record<string, string>} params
 */
export function fillPath (path, params) {
  return path.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(params[name] ?? ''))
}

const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 }

/**
 * Whether a role may call an operation, from its `x-access`. Unknown roles or
 * operations without the field are allowed: the coordinator decides anyway.
 * @param {any} document @param {string} method @param {string} path @param {string | undefined} role
 */
export function permits (document, method, path, role) {
  const access = operation(document, method, path)?.['x-access']
  if (role === undefined || typeof access !== 'string' || access === 'public') return true
  if (access === 'device') return false
  const needed = access === 'device-or-viewer' ? 'viewer' : access
  const have = ROLE_RANK[/** @type {keyof typeof ROLE_RANK} */ (role)]
  const want = ROLE_RANK[/** @type {keyof typeof ROLE_RANK} */ (needed)]
  return have === undefined || want === undefined || have >= want
}
