/**
 * Errors of the coordinator's domain. Each carries the HTTP status it maps to
 * and whether its message may be shown to the caller (`expose`); the HTTP
 * layer turns them into problem+json.
 */
export class ApiError extends Error {
  readonly status: number
  readonly reason: string
  readonly expose: boolean
  readonly errors?: Array<{ path: string, message: string }>
  readonly headers?: Record<string, string>

  constructor (status: number, reason: string, message: string, init: { expose?: boolean, errors?: Array<{ path: string, message: string }>, headers?: Record<string, string>, cause?: unknown } = {}) {
    super(message, { cause: init.cause })
    this.name = 'ApiError'
    this.status = status
    this.reason = reason
    this.expose = init.expose ?? status < 500
    if (init.errors !== undefined) this.errors = init.errors
    if (init.headers !== undefined) this.headers = init.headers
  }
}

export class ValidationError extends ApiError {
  /** `reason`: `invalid-request`, or a narrower one a field's check names (`control-characters`). */
  constructor (message: string, errors?: Array<{ path: string, message: string }>, reason = 'invalid-request') {
    super(400, reason, message, errors === undefined ? {} : { errors })
    this.name = 'ValidationError'
  }
}

export class UnauthorizedError extends ApiError {
  /** `reason` says which: `unauthorized`, `token-revoked`, `token-expired`, `device-blocked`, `device-retired`, … */
  constructor (message = 'a valid bearer token is required', reason = 'unauthorized') {
    super(401, reason, message, { headers: { 'www-authenticate': 'Bearer realm="meshdeploy"' } })
    this.name = 'UnauthorizedError'
  }
}

export class ForbiddenError extends ApiError {
  constructor (message: string) {
    super(403, 'forbidden', message)
    this.name = 'ForbiddenError'
  }
}

export class NotFoundError extends ApiError {
  constructor (what: string, id: string) {
    super(404, 'not-found', `${what} ${id} does not exist`)
    this.name = 'NotFoundError'
  }
}

export class ConflictError extends ApiError {
  constructor (reason: string, message: string) {
    super(409, reason, message)
    this.name = 'ConflictError'
  }
}

export class PayloadTooLargeError extends ApiError {
  constructor (message: string) {
    super(413, 'payload-too-large', message)
    this.name = 'PayloadTooLargeError'
  }
}

export class UnsupportedMediaTypeError extends ApiError {
  constructor (message: string) {
    super(415, 'unsupported-media-type', message)
    this.name = 'UnsupportedMediaTypeError'
  }
}

/** The client sent too many requests; `retryAfterMs` says when the next one would pass. */
export class RateLimitedError extends ApiError {
  readonly retryAfterMs: number
  constructor (message: string, retryAfterMs: number) {
    super(429, 'rate-limited', message, { headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) } })
    this.name = 'RateLimitedError'
    this.retryAfterMs = retryAfterMs
  }
}

/** The client took too long to send its request body. */
export class RequestTimeoutError extends ApiError {
  constructor (message: string) {
    super(408, 'body-timeout', message, { headers: { connection: 'close' } })
    this.name = 'RequestTimeoutError'
  }
}
