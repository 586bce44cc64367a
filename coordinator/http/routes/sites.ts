import { createBoundarySchema, createSiteSchema } from '../../sites/service.js'
import type { RouteModule } from '../context.js'

export const siteRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/sites', tag: 'sites', access: 'operator', body: createSiteSchema,
    summary: 'Create a site: devices of one site share content with each other over their LAN',
    responses: { 201: { description: 'the site' }, 409: { description: 'a site of that name exists' } }
  }, async ({ ctx, body, actor }) => {
    const site = await services.sites.createSite(body, actor)
    ctx.status = 201
    ctx.set('Location', `/v1/sites/${encodeURIComponent(site.name)}`)
    return site
  })

  routes.add({
    method: 'get', path: '/v1/sites', tag: 'sites', access: 'viewer',
    summary: 'Sites with their boundaries and device counts, including sites named only by devices',
    responses: { 200: { description: '{ sites }' } }
  }, async () => {
    // Counts from the registry of active devices: the answer costs the sites, not a read of the fleet.
    const registry = services.devices.registry
    const boundaries = services.sites.listBoundaries()
    const records = await services.sites.listSites()
    const names = new Set([...records.map(site => site.name), ...registry.siteNames()])
    const sites = [...names].sort().map(name => ({
      name,
      defined: records.some(site => site.name === name),
      ...records.find(site => site.name === name),
      devices: registry.siteSize(name),
      siteCaches: registry.siteCaches(name).map(device => device.id).sort(),
      boundaries: boundaries.filter(boundary => boundary.site === name).map(boundary => boundary.cidr)
    }))
    return { sites }
  })

  routes.add({
    method: 'delete', path: '/v1/sites/:name', tag: 'sites', access: 'operator',
    summary: 'Delete a site; refused while boundaries place devices in it',
    responses: { 204: { description: 'deleted' }, 404: { description: 'no such site' }, 409: { description: 'boundaries still name the site' } }
  }, async ({ ctx, params }) => {
    await services.sites.deleteSite(params.name)
    ctx.status = 204
  })

  routes.add({
    method: 'post', path: '/v1/boundaries', tag: 'sites', access: 'operator', body: createBoundarySchema,
    summary: 'Add a boundary (IPv4 or IPv6 CIDR → site); devices without a declared site whose address it contains move to the site',
    responses: { 201: { description: 'the boundary' }, 400: { description: 'not a CIDR, or no such site' }, 409: { description: 'the range is already a boundary' } }
  }, async ({ ctx, body, actor }) => {
    const boundary = await services.sites.addBoundary(body, actor)
    ctx.status = 201
    return boundary
  })

  routes.add({
    method: 'get', path: '/v1/boundaries', tag: 'sites', access: 'viewer',
    summary: 'Boundaries in the order they are checked (the first that contains an address wins)',
    responses: { 200: { description: '{ boundaries }' } }
  }, () => ({ boundaries: services.sites.listBoundaries() }))

  routes.add({
    method: 'delete', path: '/v1/boundaries/:id', tag: 'sites', access: 'operator',
    summary: 'Remove a boundary; the devices it placed are placed again',
    responses: { 200: { description: 'the removed boundary' }, 404: { description: 'no such boundary' } }
  }, async ({ params }) => await services.sites.deleteBoundary(params.id))
}
