import { createPushSchema, pushHostsQuerySchema, pushListQuerySchema, rerunPushSchema } from '../../push/service.js'
import type { RouteModule } from '../context.js'

/** Push installs: the agent, or a package, installed over SSH on hosts that have no agent. */
export const pushInstallRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/push-installs', tag: 'push installs', access: 'operator', body: createPushSchema,
    summary: 'Install the agent (or a deb, rpm or shell package) over SSH on hosts without an agent: credentials tried in order, a maximum of attempts, a reboot policy (never or always; asking the user needs an agent), host keys pinned at first contact',
    responses: {
      202: { description: 'the push install, queued to run' },
      201: { description: 'the push install, saved to start later (start: false)' },
      400: { description: 'invalid hosts, credentials, fingerprints or options, each with its reason' },
      409: { description: 'no agent packages have been built' },
      422: { description: 'the package is of a kind a push does not install' },
      503: { description: 'too many push runs wait already (Retry-After)' }
    }
  }, async ({ ctx, body, actor }) => {
    const record = await services.pushInstalls.create(body, actor)
    services.logger.info({ pushId: record.id, hosts: record.hosts.length, install: record.install.type, by: actor }, record.status === 'saved' ? 'push install saved' : 'push install queued')
    ctx.status = record.status === 'saved' ? 201 : 202
    return record
  })

  routes.add({
    method: 'get', path: '/v1/push-installs', tag: 'push installs', access: 'viewer', query: pushListQuerySchema,
    summary: 'Push installs, newest first, with the counts of their latest run; page with cursor',
    responses: { 200: { description: '{ pushInstalls, nextCursor? }' } }
  }, async ({ query }) => await services.pushInstalls.list(query))

  routes.add({
    method: 'get', path: '/v1/push-installs/:id', tag: 'push installs', access: 'viewer', query: pushHostsQuerySchema,
    summary: 'A push install and a page of its hosts\' results (the latest run unless run= says): state, the credential that worked, every attempt with each credential\'s outcome and the reason it failed, the enrolled device',
    responses: { 200: { description: 'the push install with { run, hosts, nextCursor? }' }, 404: { description: 'no such push install or run' } }
  }, async ({ params, query }) => {
    const record = await services.pushInstalls.get(params.id)
    return { ...record, ...(await services.pushInstalls.hosts(params.id, query)) }
  })

  routes.add({
    method: 'post', path: '/v1/push-installs/:id/runs', tag: 'push installs', access: 'operator', body: rerunPushSchema, bodyOptional: true,
    summary: 'Run a saved push install again: the hosts of its last run that did not succeed (default), or all',
    responses: { 202: { description: 'the push install, queued' }, 409: { description: 'it is queued or running, or every host succeeded' }, 503: { description: 'too many push runs wait already' } }
  }, async ({ ctx, params, body, actor }) => {
    const record = await services.pushInstalls.rerun(params.id, body, actor)
    services.logger.info({ pushId: record.id, run: record.run, by: actor }, 'push install run queued')
    ctx.status = 202
    return record
  })

  routes.add({
    method: 'post', path: '/v1/push-installs/:id/cancel', tag: 'push installs', access: 'operator',
    summary: 'Cancel a queued or running push install: attempts under way stop, hosts not yet done are cancelled',
    responses: { 200: { description: 'the push install' }, 409: { description: 'it is not queued or running' } }
  }, async ({ params, actor }) => {
    const record = await services.pushInstalls.cancel(params.id, actor)
    services.logger.info({ pushId: record.id, by: actor }, 'push install cancelled')
    return record
  })
}
