import { z } from 'zod'
import type { RouteSpec } from './routes-table.js'
import { VERSION } from './routes/health.js'

type JsonSchema = Record<string, unknown>

function schemaOf (schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const json = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as JsonSchema
  delete json.$schema
  return json
}

/** `/v1/tasks/:id` → `/v1/tasks/{id}` */
export function openApiPath (path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')
}

const PROBLEM_SCHEMA: JsonSchema = {
  type: 'object',
  required: ['type', 'title', 'status', 'reason'],
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    reason: { type: 'string', description: 'stable machine-readable reason' },
    detail: { type: 'string' },
    errors: { type: 'array', items: { type: 'object', properties: { path: { type: 'string' }, message: { type: 'string' } } } }
  }
}

const ACCESS_TEXT: Record<string, string> = {
  public: 'No credentials.',
  device: 'A device credential.',
  'device-or-viewer': 'A device credential or an operator token of any role.',
  viewer: 'An operator token (viewer, operator or admin).',
  operator: 'An operator token with the operator or admin role.',
  admin: 'An operator token with the admin role.'
}

/**
 * The OpenAPI 3.1 document of the API, generated from the route table: the
 * same zod schemas that validate requests describe them here.
 */
export function openApiDocument (specs: ReadonlyArray<RouteSpec<any, any>>): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const spec of specs) {
    const path = openApiPath(spec.path)
    const parameters: unknown[] = [...spec.path.matchAll(/:([A-Za-z0-9_]+)/g)].map(match => ({ name: match[1], in: 'path', required: true, schema: { type: 'string' } }))
    if (spec.query !== undefined) {
      const query = schemaOf(spec.query, 'input') as { properties?: Record<string, JsonSchema>, required?: string[] }
      for (const [name, schema] of Object.entries(query.properties ?? {})) {
        parameters.push({ name, in: 'query', required: query.required?.includes(name) ?? false, schema })
      }
    }
    const operation: Record<string, unknown> = {
      operationId: `${spec.method}${spec.path.replace(/[/:{}-]+(\w)?/g, (_, c: string | undefined) => (c ?? '').toUpperCase())}`,
      summary: spec.summary,
      description: `Access: ${ACCESS_TEXT[spec.access]}`,
      // Machine-readable for clients that offer only what their user's role may do (the web console).
      'x-access': spec.access,
      tags: [spec.tag],
      security: spec.access === 'public' ? [] : [{ bearer: [] }],
      responses: {}
    }
    if (parameters.length > 0) operation.parameters = parameters
    if (spec.body !== undefined) {
      operation.requestBody = { required: spec.bodyOptional !== true, content: { 'application/json': { schema: schemaOf(spec.body, 'input') } } }
    } else if (spec.rawBody !== undefined) {
      const content: Record<string, unknown> = { description: spec.rawBody.description }
      if (spec.rawBody.contentType === 'multipart/form-data') {
        content.schema = {
          type: 'object',
          required: ['metadata', 'file'],
          properties: {
            metadata: spec.rawBody.schema !== undefined ? { ...schemaOf(spec.rawBody.schema, 'input'), description: 'JSON' } : { type: 'string' },
            file: { type: 'string', contentMediaType: 'application/octet-stream' }
          }
        }
        content.encoding = { metadata: { contentType: 'application/json' } }
      }
      operation.requestBody = { required: true, description: spec.rawBody.description, content: { [spec.rawBody.contentType]: content } }
    }
    const responses = operation.responses as Record<string, unknown>
    for (const [status, response] of Object.entries(spec.responses)) {
      const contentType = response.contentType ?? 'application/json'
      const body: Record<string, unknown> = { description: response.description }
      if (response.schema !== undefined) body.content = { [contentType]: { schema: schemaOf(response.schema, 'output') } }
      else if (contentType !== 'application/json') body.content = { [contentType]: { schema: { type: 'string', contentMediaType: contentType } } }
      responses[status] = body
    }
    responses.default = { description: 'an error', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } }
    paths[path] ??= {}
    paths[path][spec.method] = operation
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'meshdeploy coordinator API',
      version: VERSION,
      description: 'Peer-to-peer assisted software distribution. Errors are application/problem+json with a stable `reason`.'
    },
    servers: [{ url: '/' }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'an operator token or a device credential' } },
      schemas: { Problem: PROBLEM_SCHEMA }
    },
    paths
  }
}
