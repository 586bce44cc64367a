import type { SiteSource } from '../store/types.js'

/** Devices that no site was declared for and no boundary contains. */
export const DEFAULT_SITE = 'default'

export interface Placement {
  site: string
  siteSource: SiteSource
}

/**
 * Where a device belongs: the site declared for it (by the agent or its
 * enrollment token) wins; otherwise the site of the first boundary that
 * contains its address; otherwise the default site.
 */
export function placeDevice (declaredSite: string | undefined, boundarySite: string | undefined): Placement {
  if (declaredSite !== undefined) return { site: declaredSite, siteSource: 'declared' }
  if (boundarySite !== undefined) return { site: boundarySite, siteSource: 'boundary' }
  return { site: DEFAULT_SITE, siteSource: 'default' }
}

/** Whether a device's site follows its address (it was not declared). */
export function followsAddress (device: { siteSource?: SiteSource }): boolean {
  return device.siteSource === 'boundary' || device.siteSource === 'default'
}
