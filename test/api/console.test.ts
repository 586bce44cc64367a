import test from 'ava'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CONSOLE_CSP, findConsoleFolder } from '../../coordinator/http/console.js'
import { openTestCoordinator } from '../helpers/coordinator.js'

const folder = findConsoleFolder()

/** The console's reader of the OpenAPI document: plain JavaScript for the browser, loaded here as it is. */
const CONSOLE_OPENAPI_MODULE: string = '../../coordinator/console/js/openapi.js'
interface ConsoleOpenApi {
  permits: (document: unknown, method: string, path: string, role: string | undefined) => boolean
  resourceActions: (document: unknown, base: string) => { actions: Array<{ name: string }>, edit: unknown, remove: unknown }
  fillPath: (path: string, params: Record<string, string>) => string
}

async function filesUnder (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...await filesUnder(path))
    else out.push(path)
  }
  return out
}

test('the console is served at / without credentials, with a strict policy and revalidated caching', async t => {
  const c = await openTestCoordinator()
  t.teardown(async () => { await c.close() })
  const page = await c.http.get('/').expect(200)
  t.is(page.headers['content-type'], 'text/html; charset=utf-8')
  t.is(page.headers['content-security-policy'], CONSOLE_CSP)
  t.regex(CONSOLE_CSP, /default-src 'none'/)
  t.regex(CONSOLE_CSP, /script-src 'self'(;|$)/, 'no inline script, no eval')
  t.regex(CONSOLE_CSP, /require-trusted-types-for 'script'/)
  t.is(page.headers['x-frame-options'], 'DENY')
  t.is(page.headers['referrer-policy'], 'no-referrer')
  t.is(page.headers['x-content-type-options'], 'nosniff')
  t.is(page.headers['cache-control'], 'no-cache')
  t.regex(page.headers.etag, /^"[\w-]{22}"$/)
  await c.http.get('/').set('if-none-match', page.headers.etag).expect(304)
  const types: Record<string, string> = {
    '/console/js/main.js': 'text/javascript; charset=utf-8',
    '/console/app.css': 'text/css; charset=utf-8',
    '/console/i18n/zh.json': 'application/json; charset=utf-8',
    '/console/icon.svg': 'image/svg+xml'
  }
  for (const [path, type] of Object.entries(types)) {
    const response = await c.http.get(path).expect(200)
    t.is(response.headers['content-type'], type, path)
  }
  const head = await c.http.head('/console/js/main.js').expect(200)
  t.is(head.headers['content-type'], 'text/javascript; charset=utf-8')
  for (const path of ['/console/nope.js', '/console/../package.json', '/console/%2e%2e/package.json', '/console/js']) {
    const missing = await c.http.get(path)
    t.is(missing.status, 404, path)
    t.is(missing.headers['content-type'], 'application/problem+json', path)
  }
  t.is((await c.http.post('/').send({})).status, 404, 'only reads')
  t.is((await c.http.get('/v1/tasks')).status, 401, 'the data behind it still needs a token')
})

test('the console loads nothing from elsewhere and never turns text into markup', async t => {
  for (const file of await filesUnder(folder)) {
    if (!/\.(js|html|css)$/.test(file)) continue
    const text = await readFile(file, 'utf8')
    t.notRegex(text, /(src|href)=["']?(https?:)?\/\//, `${file} loads from another origin`)
    t.notRegex(text, /@import|url\(\s*["']?https?:/, `${file} imports from another origin`)
    t.notRegex(text, /\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(/, `${file} parses markup or code from strings`)
    t.notRegex(text, /localStorage/, `${file} uses localStorage`)
    t.notRegex(text, /<script>|style=/, `${file} has inline script or style`)
  }
})

test('every catalogue has every message, and every message the console asks for exists', async t => {
  const catalogues: Record<string, Record<string, unknown>> = {}
  for (const file of await readdir(join(folder, 'i18n'))) {
    const text = await readFile(join(folder, 'i18n', file), 'utf8')
    catalogues[file.replace('.json', '')] = JSON.parse(text)
    const keys = [...text.matchAll(/^\s*"([^"]+)":/gm)].map(match => match[1])
    t.deepEqual(keys.filter((key, index) => keys.indexOf(key) !== index), [], `${file} names each message once`)
  }
  t.deepEqual(Object.keys(catalogues).sort(), ['de', 'en', 'ja', 'zh'])
  const keys = Object.keys(catalogues.en).sort()
  for (const [language, catalogue] of Object.entries(catalogues)) {
    t.deepEqual(Object.keys(catalogue).sort(), keys, `${language} has the same messages as en`)
    for (const [key, message] of Object.entries(catalogue)) {
      if (typeof message === 'object') t.true('other' in (message as object), `${language} ${key} has an "other" form`)
      else t.is(typeof message, 'string')
      const placeholders = (value: unknown): string[] => [...JSON.stringify(value).matchAll(/\{(\w+)\}/g)].map(match => match[1]).sort()
      t.deepEqual([...new Set(placeholders(message))], [...new Set(placeholders(catalogues.en[key]))], `${language} ${key} keeps the placeholders`)
    }
  }
  const used = new Set<string>()
  for (const file of await filesUnder(join(folder, 'js'))) {
    for (const match of (await readFile(file, 'utf8')).matchAll(/\bt\('([\w.-]+)'/g)) used.add(match[1])
  }
  t.true(used.size > 100)
  t.deepEqual([...used].filter(key => !(key in catalogues.en)), [], 'messages used but missing')
})

test('GET /v1/me names the token and its role; the document says which role each operation needs', async t => {
  const c = await openTestCoordinator()
  t.teardown(async () => { await c.close() })
  t.is((await c.http.get('/v1/me')).status, 401)
  const { body: me } = await c.http.get('/v1/me').set('authorization', `Bearer ${c.adminToken}`).expect(200)
  t.like(me, { kind: 'operator', role: 'admin' })
  const { body: document } = await c.http.get('/v1/openapi.json').set('authorization', `Bearer ${c.adminToken}`)
  t.is(document.paths['/v1/tasks'].post['x-access'], 'operator')
  t.is(document.paths['/v1/tasks'].get['x-access'], 'viewer')
  t.is(document.paths['/v1/health'].get['x-access'], 'public')

  // The console's reading of the same document (its module runs in Node as well).
  const { permits, resourceActions, fillPath } = await import(CONSOLE_OPENAPI_MODULE) as ConsoleOpenApi
  t.true(permits(document, 'post', '/v1/tasks', 'operator'))
  t.false(permits(document, 'post', '/v1/tasks', 'viewer'), 'a viewer is not offered what it may not do')
  t.true(permits(document, 'get', '/v1/tasks', 'viewer'))
  t.true(permits(document, 'post', '/v1/tasks', undefined), 'unknown role: the coordinator decides')
  const { actions, remove, edit } = resourceActions(document, '/v1/tasks')
  t.true(actions.some(action => action.name === 'cancel'))
  t.is(remove === undefined, document.paths['/v1/tasks/{id}'].delete === undefined)
  t.is(edit === undefined, document.paths['/v1/tasks/{id}'].patch === undefined)
  t.true(resourceActions(document, '/v1/packages').remove !== undefined)
  t.is(fillPath('/v1/tasks/{id}/cancel', { id: 'a/b' }), '/v1/tasks/a%2Fb/cancel')
})
