// All HTTP between the console and the coordinator. Every call carries the
// operator's bearer token; the token lives in sessionStorage only.

const TOKEN_KEY = 'meshdeploy.token'
const MAX_READ_ATTEMPTS = 4
const MAX_RETRY_WAIT_MS = 10_000

/** An error answer of the API (application/problem+json). */
export class ApiProblem extends Error {
  /**
   * @param {number} status
   * @param {{ title?: string, detail?: string, reason?: string, errors?: Array<{ path: string, message: string }> }} problem
   */
  constructor (status, problem) {
    super(problem.detail ?? problem.title ?? `HTTP ${status}`)
    this.name = 'ApiProblem'
    this.status = status
    this.reason = problem.reason ?? 'unknown'
    this.title = problem.title ?? ''
    /** Field errors: `path` is dotted (`targets.deviceIds.0`), `(root)` for the whole body. */
    this.errors = Array.isArray(problem.errors) ? problem.errors : []
    /** @type {number | undefined} How long the coordinator asks to wait (429). */
    this.retryAfterMs = undefined
  }
}

/** The coordinator could not be reached. */
export class NetworkError extends Error {
  /** @param {string} message */
  constructor (message) {
    super(message)
    this.name = 'NetworkError'
  }
}

export function storedToken () {
  return sessionStorage.getItem(TOKEN_KEY)
}

/** @param {string | null} token */
export function storeToken (token) {
  if (token === null) sessionStorage.removeItem(TOKEN_KEY)
  else sessionStorage.setItem(TOKEN_KEY, token)
}

/**
 * @param {number} status
 * @param {string} text
 * @param {string | null} contentType
 */
function problemOf (status, text, contentType) {
  if (contentType !== null && contentType.includes('json')) {
    try {
      return new ApiProblem(status, JSON.parse(text))
    } catch {}
  }
  return new ApiProblem(status, { title: `HTTP ${status}` })
}

export class Api {
  /**
   * @param {string} token
   * @param {() => void} onUnauthorized called when the coordinator no longer accepts the token
   */
  constructor (token, onUnauthorized) {
    this.token = token
    this.onUnauthorized = onUnauthorized
    /** @type {Promise<any> | undefined} */
    this.document = undefined
    /** @type {{ name: string, role: string } | undefined} who the token is, once known */
    this.identity = undefined
  }

  /** Learns the token's name and role (GET /v1/me); unknown on coordinators without that route. */
  async whoAmI () {
    if (this.identity !== undefined) return this.identity
    try {
      this.identity = await this.get('/v1/me')
    } catch (error) {
      if (!(error instanceof ApiProblem) || error.status !== 404) throw error
    }
    return this.identity
  }

  /** @param {Record<string, string>} [extra] */
  headers (extra = {}) {
    return { accept: 'application/json', authorization: `Bearer ${this.token}`, ...extra }
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {{ signal?: AbortSignal }} [options]
   */
  async request (method, path, body, options = {}) {
    // Reads refused for going too fast are tried again after the wait the coordinator names.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.requestOnce(method, path, body, options)
      } catch (error) {
        if (!(error instanceof ApiProblem) || error.status !== 429 || method !== 'GET' || attempt >= MAX_READ_ATTEMPTS) throw error
        await new Promise(resolve => setTimeout(resolve, Math.min(MAX_RETRY_WAIT_MS, error.retryAfterMs ?? 1000)))
      }
    }
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {{ signal?: AbortSignal }} [options]
   */
  async requestOnce (method, path, body, options = {}) {
    let response
    try {
      response = await fetch(path, {
        method,
        headers: this.headers(body === undefined ? {} : { 'content-type': 'application/json' }),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: options.signal,
        cache: 'no-store',
        credentials: 'omit'
      })
    } catch (error) {
      if (/** @type {Error} */ (error).name === 'AbortError') throw error
      throw new NetworkError(/** @type {Error} */ (error).message)
    }
    const text = await response.text()
    if (!response.ok) {
      const problem = problemOf(response.status, text, response.headers.get('content-type'))
      const retryAfter = Number(response.headers.get('retry-after'))
      if (Number.isFinite(retryAfter) && retryAfter >= 0) problem.retryAfterMs = retryAfter * 1000
      if (response.status === 401) this.onUnauthorized()
      throw problem
    }
    return text === '' ? {} : JSON.parse(text)
  }

  /** @param {string} path @param {{ signal?: AbortSignal }} [options] */
  get (path, options) { return this.request('GET', path, undefined, options) }
  /** @param {string} path @param {unknown} [body] */
  post (path, body) { return this.request('POST', path, body) }
  /** @param {string} path @param {unknown} body */
  patch (path, body) { return this.request('PATCH', path, body) }
  /** @param {string} path */
  delete (path) { return this.request('DELETE', path) }

  /** The API's OpenAPI document: what the forms and actions are built from. */
  openapi () {
    this.document ??= this.get('/v1/openapi.json').catch(error => {
      this.document = undefined
      throw error
    })
    return this.document
  }

  /**
   * Sends a multipart form with upload progress (fetch cannot report it).
   * @param {string} path
   * @param {FormData} form
   * @param {{ onProgress?: (sent: number, total: number) => void, signal?: AbortSignal }} [options]
   */
  upload (path, form, options = {}) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest()
      request.open('POST', path)
      for (const [name, value] of Object.entries(this.headers())) request.setRequestHeader(name, value)
      request.upload.addEventListener('progress', event => {
        if (event.lengthComputable) options.onProgress?.(event.loaded, event.total)
      })
      request.addEventListener('load', () => {
        if (request.status >= 200 && request.status < 300) {
          resolve(request.responseText === '' ? {} : JSON.parse(request.responseText))
          return
        }
        if (request.status === 401) this.onUnauthorized()
        reject(problemOf(request.status, request.responseText, request.getResponseHeader('content-type')))
      })
      request.addEventListener('error', () => { reject(new NetworkError('the upload could not reach the coordinator')) })
      request.addEventListener('abort', () => { reject(new DOMException('the upload was cancelled', 'AbortError')) })
      options.signal?.addEventListener('abort', () => { request.abort() }, { once: true })
      request.send(form)
    })
  }
}
