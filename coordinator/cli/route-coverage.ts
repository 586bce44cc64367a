/**
 * The CLI command that performs each API operation. The API and the CLI grow
 * together: a test fails when a route has no command here, or a command named
 * here does not exist.
 */
export const COMMAND_OF_ROUTE: Readonly<Record<string, string>> = {
  'GET /v1/health': 'health',
  'GET /v1/me': 'whoami',
  'GET /v1/openapi.json': 'openapi',
  'GET /v1/stats': 'stats',
  'GET /metrics': 'metrics',
  'GET /v1/events': 'events',

  'POST /v1/agents/enroll': 'agent start',
  'GET /v1/agents/assignments': 'agent start',
  'PUT /v1/agents/self': 'agent start',
  'POST /v1/agents/status': 'agent start',
  'GET /v1/agents/catalog': 'agent catalog',
  'POST /v1/agents/requests': 'agent request',
  'GET /v1/agents/requests': 'agent requests',
  'GET /v1/content/:sha256': 'package download',

  'POST /v1/packages': 'package add',
  'GET /v1/packages': 'package list',
  'GET /v1/packages/:id': 'package show',
  'PATCH /v1/packages/:id': 'package edit',
  'DELETE /v1/packages/:id': 'package rm',

  'POST /v1/tasks': 'task create',
  'GET /v1/tasks': 'task list',
  'GET /v1/tasks/:id': 'task show',
  'PATCH /v1/tasks/:id': 'task edit',
  'DELETE /v1/tasks/:id': 'task delete',
  'GET /v1/tasks/:id/devices': 'task show',
  'GET /v1/tasks/:id/devices/:deviceId/history': 'task history',
  'POST /v1/tasks/:id/pause': 'task pause',
  'POST /v1/tasks/:id/resume': 'task resume',
  'POST /v1/tasks/:id/cancel': 'task cancel',
  'POST /v1/tasks/:id/rerun': 'task rerun',

  'GET /v1/devices': 'device list',
  'GET /v1/devices/:id': 'device show',
  'PATCH /v1/devices/:id': 'device edit',
  'POST /v1/devices/:id/block': 'device block',
  'POST /v1/devices/:id/unblock': 'device unblock',
  'POST /v1/devices/:id/retire': 'device retire',
  'POST /v1/devices/:id/clear-cache': 'device clear-cache',

  'POST /v1/sites': 'site create',
  'GET /v1/sites': 'site list',
  'DELETE /v1/sites/:name': 'site rm',
  'POST /v1/boundaries': 'boundary add',
  'GET /v1/boundaries': 'boundary list',
  'DELETE /v1/boundaries/:id': 'boundary rm',

  'POST /v1/enrollment-tokens': 'enrollment-token create',
  'GET /v1/enrollment-tokens': 'enrollment-token list',
  'POST /v1/enrollment-tokens/:id/revoke': 'enrollment-token revoke',
  'POST /v1/tokens': 'token create',
  'GET /v1/tokens': 'token list',
  'POST /v1/tokens/:id/revoke': 'token revoke',
  'GET /v1/audit': 'audit',
  'GET /v1/keys': 'key show',
  'POST /v1/keys/rotate': 'key rotate',

  'POST /v1/users/import': 'user import',
  'GET /v1/users': 'user list',
  'GET /v1/users/:id': 'user show',
  'DELETE /v1/users/:id': 'user rm',
  'POST /v1/publishers': 'publisher add',
  'GET /v1/publishers': 'publisher list',
  'DELETE /v1/publishers/:keyId': 'publisher rm',
  'GET /v1/settings': 'settings show',
  'PATCH /v1/settings': 'settings set',
  'POST /v1/requests': 'request create',
  'GET /v1/requests': 'request list',
  'POST /v1/requests/:id/approve': 'request approve',
  'POST /v1/requests/:id/deny': 'request deny'
}
