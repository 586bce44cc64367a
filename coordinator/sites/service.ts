import { EventEmitter } from 'node:events'
import { z } from 'zod'
import { randomId } from '../../protocol/index.js'
import { ConflictError, NotFoundError, ValidationError } from '../errors.js'
import { collect } from '../store/level-store.js'
import type { BoundaryRecord, SiteRecord, Store } from '../store/types.js'
import { AddressRange, InvalidCidrError, parseCidr } from './cidr.js'
import { label } from '../../protocol/text.js'

export const siteNameSchema = label(z.string().trim().min(1).max(100))

export const createSiteSchema = z.object({
  name: siteNameSchema,
  description: z.string().max(500).optional()
}).strict()

export const createBoundarySchema = z.object({
  cidr: z.string().trim().min(2).max(64),
  site: siteNameSchema,
  description: z.string().max(500).optional()
}).strict()

export type CreateSiteRequest = z.infer<typeof createSiteSchema>
export type CreateBoundaryRequest = z.infer<typeof createBoundarySchema>

interface CompiledBoundary {
  record: BoundaryRecord
  range: AddressRange
}

/**
 * Sites and the boundaries (address ranges) that place devices in them, like
 * SCCM's boundary groups. Boundaries are checked in the order they were
 * created; the first that contains a device's address names its site.
 */
export class SiteService extends EventEmitter<{ 'boundaries-changed': [] }> {
  private readonly store: Store
  private readonly now: () => number
  private boundaries: CompiledBoundary[] = []

  constructor (init: { store: Store, now?: () => number }) {
    super()
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  async open (): Promise<void> {
    const compiled: CompiledBoundary[] = []
    for await (const record of this.store.collections.boundaries.values()) {
      compiled.push({ record, range: new AddressRange(parseCidr(record.cidr)) })
    }
    this.boundaries = compiled
  }

  /** The site of the first boundary containing the address, if any. */
  siteForAddress (address: string | undefined): string | undefined {
    if (address === undefined) return undefined
    return this.boundaries.find(boundary => boundary.range.contains(address))?.record.site
  }

  /** Whether an address lies inside one of the site's boundaries. */
  siteContains (site: string, address: string): boolean {
    return this.boundaries.some(boundary => boundary.record.site === site && boundary.range.contains(address))
  }

  async createSite (request: CreateSiteRequest, createdBy: string): Promise<SiteRecord> {
    if (await this.store.collections.sites.get(request.name) !== undefined) throw new ConflictError('site-exists', `site ${request.name} already exists`)
    const site: SiteRecord = { name: request.name, createdAt: new Date(this.now()).toISOString(), createdBy }
    if (request.description !== undefined) site.description = request.description
    await this.store.write([{ type: 'put', collection: 'sites', key: site.name, value: site }])
    return site
  }

  async getSite (name: string): Promise<SiteRecord> {
    const site = await this.store.collections.sites.get(name)
    if (site === undefined) throw new NotFoundError('site', name)
    return site
  }

  async listSites (): Promise<SiteRecord[]> {
    return await collect(this.store.collections.sites.values())
  }

  async deleteSite (name: string): Promise<void> {
    await this.getSite(name)
    const used = this.boundaries.filter(boundary => boundary.record.site === name)
    if (used.length > 0) throw new ConflictError('site-in-use', `site ${name} still has ${used.length} boundaries (${used.map(b => b.record.cidr).join(', ')}); remove them first`)
    await this.store.write([{ type: 'del', collection: 'sites', key: name }])
  }

  async addBoundary (request: CreateBoundaryRequest, createdBy: string): Promise<BoundaryRecord> {
    let cidr
    try {
      cidr = parseCidr(request.cidr)
    } catch (error) {
      if (error instanceof InvalidCidrError) throw new ValidationError(error.message, [{ path: 'cidr', message: error.message }])
      throw error
    }
    if (await this.store.collections.sites.get(request.site) === undefined) {
      throw new ValidationError(`site ${request.site} does not exist; create it first`, [{ path: 'site', message: 'no such site' }])
    }
    const clash = this.boundaries.find(boundary => boundary.record.cidr === cidr.text)
    if (clash !== undefined) throw new ConflictError('boundary-exists', `${cidr.text} is already a boundary of site ${clash.record.site} (${clash.record.id})`)
    const createdAt = new Date(this.now()).toISOString()
    const record: BoundaryRecord = { id: randomId('bnd'), cidr: cidr.text, site: request.site, createdAt, createdBy }
    if (request.description !== undefined) record.description = request.description
    // Keys sort by creation time, which is the order boundaries are checked in.
    await this.store.write([{ type: 'put', collection: 'boundaries', key: `${createdAt}!${record.id}`, value: record }])
    await this.open()
    this.emit('boundaries-changed')
    return record
  }

  listBoundaries (): BoundaryRecord[] {
    return this.boundaries.map(boundary => boundary.record)
  }

  async deleteBoundary (id: string): Promise<BoundaryRecord> {
    const found = this.boundaries.find(boundary => boundary.record.id === id)
    if (found === undefined) throw new NotFoundError('boundary', id)
    await this.store.write([{ type: 'del', collection: 'boundaries', key: `${found.record.createdAt}!${found.record.id}` }])
    await this.open()
    this.emit('boundaries-changed')
    return found.record
  }
}
