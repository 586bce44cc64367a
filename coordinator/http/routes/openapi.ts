import type { RouteModule } from '../context.js'
import { openApiDocument } from '../openapi.js'

export const openApiRoutes: RouteModule = routes => {
  let document: Record<string, unknown> | undefined
  routes.add({
    method: 'get', path: '/v1/openapi.json', tag: 'system', access: 'viewer',
    summary: 'This API\'s OpenAPI 3.1 document, generated from the schemas that validate requests',
    responses: { 200: { description: 'the OpenAPI document' } }
  }, () => {
    // Built on first use, once every route module has registered.
    document ??= openApiDocument(routes.specs)
    return document
  })
}
