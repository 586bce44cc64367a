import type { Context, Next } from 'koa'
import { PROBLEM_CONTENT_TYPE, type Problem } from '../../protocol/index.js'
import { ApiError } from '../errors.js'

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable'
}

export function problemOf (status: number, reason: string, detail: string | undefined, extra: Partial<Problem> = {}): Problem {
  const problem: Problem = { type: `https://meshdeploy.dev/problems/${reason}`, title: TITLES[status] ?? 'Error', status, reason, ...extra }
  if (detail !== undefined) problem.detail = detail
  return problem
}

export interface ErrorLogger {
  error: (object: object, message: string) => void
}

/** Turns every error into an `application/problem+json` answer; hides the message of unexpected ones. */
export function problemMiddleware (logger: ErrorLogger) {
  return async function problems (ctx: Context, next: Next): Promise<void> {
    try {
      await next()
      if (ctx.status === 404 && ctx.body === undefined) {
        throw new ApiError(404, 'not-found', `no route for ${ctx.method} ${ctx.path}`)
      }
    } catch (error) {
      let problem: Problem
      if (error instanceof ApiError) {
        problem = problemOf(error.status, error.reason, error.expose ? error.message : undefined, error.errors !== undefined ? { errors: error.errors } : {})
        for (const [name, value] of Object.entries(error.headers ?? {})) ctx.set(name, value)
        if (error.status >= 500) logger.error({ err: error, path: ctx.path }, 'request failed')
      } else if (typeof (error as { status?: unknown }).status === 'number' && (error as { status: number }).status < 500) {
        const status = (error as { status: number }).status
        problem = problemOf(status, 'invalid-request', (error as Error).message)
      } else {
        logger.error({ err: error, method: ctx.method, path: ctx.path }, 'unexpected error')
        problem = problemOf(500, 'internal-error', 'the coordinator could not complete the request; see its log')
      }
      ctx.status = problem.status
      ctx.type = PROBLEM_CONTENT_TYPE
      ctx.body = problem
    }
  }
}
