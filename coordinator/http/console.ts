import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { extname, join, relative, resolve, sep } from 'node:path'
import type { Next } from 'koa'
import type { CoordinatorContext } from './context.js'

/** The console's files are small; a folder over this is a packaging mistake, not something to serve. */
export const MAX_CONSOLE_BYTES = 4 * 1024 * 1024

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.txt': 'text/plain; charset=utf-8'
}

/**
 * The console only loads its own files and talks to its own origin; no
 * inline script or style, no eval, no plugins, no framing, and DOM sinks
 * refuse strings (Trusted Types), so injected text can never become markup.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'"
].join('; ')

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CONSOLE_CSP,
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), usb=(), payment=()'
}

interface ConsoleFile {
  body: Buffer
  contentType: string
  etag: string
}

export class ConsoleFolderError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConsoleFolderError'
  }
}

/** The console's folder: next to this module in the sources, beside `dist/` once built. */
export function findConsoleFolder (): string {
  const candidates = [resolve(import.meta.dirname, '../console'), resolve(import.meta.dirname, '../../../coordinator/console')]
  const found = candidates.find(folder => existsSync(join(folder, 'index.html')))
  if (found === undefined) throw new ConsoleFolderError(`the console's files are not installed (looked in ${candidates.join(', ')})`)
  return found
}

function * walk (folder: string): Generator<string> {
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name)
    if (entry.isDirectory()) yield * walk(path)
    else if (entry.isFile()) yield path
  }
}

/** Reads the console's files into memory once, at start: only known types, bounded in total. */
export function loadConsoleFiles (folder: string): Map<string, ConsoleFile> {
  const files = new Map<string, ConsoleFile>()
  let total = 0
  for (const path of walk(folder)) {
    const contentType = CONTENT_TYPES[extname(path)]
    if (contentType === undefined) continue
    const body = readFileSync(path)
    total += body.byteLength
    if (total > MAX_CONSOLE_BYTES) throw new ConsoleFolderError(`the console's files are larger than ${MAX_CONSOLE_BYTES} bytes`)
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`
    files.set('/console/' + relative(folder, path).split(sep).join('/'), { body, contentType, etag })
  }
  return files
}

/**
 * Serves the web console at `/` and its files under `/console/`. The files
 * hold no data (everything comes from the API with the operator's token), so
 * they are public; every answer carries the console's security headers and
 * is revalidated by ETag.
 */
export function consoleMiddleware (files: ReadonlyMap<string, ConsoleFile>) {
  return async function serveConsole (ctx: CoordinatorContext, next: Next): Promise<void> {
    const path = ctx.path === '/' || ctx.path === '/index.html' ? '/console/index.html' : ctx.path
    const file = path.startsWith('/console/') ? files.get(path) : undefined
    if (file === undefined || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) {
      await next()
      return
    }
    ctx.set(SECURITY_HEADERS)
    ctx.set('Cache-Control', 'no-cache')
    ctx.set('ETag', file.etag)
    ctx.type = file.contentType
    if (ctx.get('if-none-match').split(/\s*,\s*/).includes(file.etag)) {
      ctx.status = 304
      return
    }
    ctx.status = 200
    ctx.body = file.body
  }
}
