import { settingsPatchSchema } from '../../settings/service.js'
import type { RouteModule } from '../context.js'

export const settingsRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'get', path: '/v1/settings', tag: 'settings', access: 'viewer',
    summary: 'Organisation settings: securityVerification, autoApproveRequests',
    responses: { 200: { description: 'the settings' } }
  }, () => services.settings.get())

  routes.add({
    method: 'patch', path: '/v1/settings', tag: 'settings', access: 'admin', body: settingsPatchSchema,
    summary: 'Change settings',
    responses: { 200: { description: 'the settings' } }
  }, async ({ body, actor }) => {
    const settings = await services.settings.update(body)
    services.logger.info({ changed: body, by: actor }, 'settings changed')
    return settings
  })
}
