/**
 * An API error as RFC 9457 problem details (`application/problem+json`).
 * `reason` is a stable machine-readable word; `detail` is for people.
 */
export interface Problem {
  type: string
  title: string
  status: number
  reason: string
  detail?: string
  /** Field-level messages from request validation. */
  errors?: Array<{ path: string, message: string }>
  [extension: string]: unknown
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json'
