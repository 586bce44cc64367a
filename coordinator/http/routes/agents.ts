import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { z } from 'zod'
import { MAX_ASSIGNMENT_WAIT_SECONDS, MAX_STATUS_BATCH_RECORDS, SHA256_HEX, toHex } from '../../../protocol/index.js'
import { enrollRequestSchema, selfReportSchema } from '../../devices/service.js'
import { ApiError, NotFoundError, ValidationError } from '../../errors.js'
import type { RouteModule } from '../context.js'

const statusBatchSchema = z.object({
  records: z.array(z.unknown()).min(1).max(MAX_STATUS_BATCH_RECORDS),
  /** A relay asks for the coordinator's signed receipt, to pass on to its site. */
  receipt: z.boolean().optional()
}).strict()

/** Parses a single `bytes=a-b` range; multiple ranges are not served (the whole content is). */
export function parseRange (header: string, size: number): { start: number, end: number } | 'unsatisfiable' | undefined {
  if (header === '') return undefined
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (match === null || (match[1] === '' && match[2] === '')) return undefined
  let start: number
  let end: number
  if (match[1] === '') {
    const suffix = Number(match[2])
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(match[1])
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1)
  }
  if (start >= size || end < start) return 'unsatisfiable'
  return { start, end }
}

const assignmentsQuerySchema = z.object({
  waitSeconds: z.coerce.number().min(0).max(MAX_ASSIGNMENT_WAIT_SECONDS).optional(),
  etag: z.string().max(64).optional()
}).strict()

/** Why a held request's signal aborts: its connection closed (answered, or the agent went away). */
const REQUEST_CLOSED = Object.freeze({ name: 'RequestClosed', message: 'the request\'s connection closed' })

export const agentRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/agents/enroll', tag: 'agents', access: 'public', body: enrollRequestSchema,
    summary: 'Enroll a device with an enrollment token: device id, credential and the coordinator key to pin',
    responses: { 201: { description: 'the device id, its credential and the coordinator public key' }, 401: { description: 'the token is not valid, expired or used up' } }
  }, async ({ ctx, body }) => {
    const { device, credential } = await services.devices.enroll(body, ctx.ip)
    services.logger.info({ deviceId: device.id, hostname: device.hostname, site: device.site }, 'device enrolled')
    ctx.status = 201
    return {
      deviceId: device.id,
      credential,
      peerId: device.peerId,
      site: device.site,
      groups: device.groups,
      coordinatorPublicKey: toHex(services.key.publicKey),
      coordinatorKeyId: services.key.keyId,
      coordinatorKeySequence: services.keyring.sequence,
      certificate: services.certificates.certificateFor(device)
    }
  })

  routes.add({
    method: 'get', path: '/v1/agents/assignments', tag: 'agents', access: 'device', query: assignmentsQuerySchema,
    summary: 'The device\'s signed task manifests; with an etag, held open until they change',
    responses: { 200: { description: 'etag, device, assignments, poll interval' } }
  }, async ({ ctx, query, device }) => {
    const closed = new AbortController()
    // A plain reason: an AbortError would capture a stack for each of thousands of answered requests.
    ctx.req.on('close', () => { closed.abort(REQUEST_CLOSED) })
    const etag = query.etag !== undefined && query.etag !== '' ? query.etag : undefined
    const list = await services.assignments.waitFor(device!, etag, (query.waitSeconds ?? 0) * 1000, closed.signal)
    services.contentAccess.noteAnswer(device!.id, list)
    return list
  })

  routes.add({
    method: 'put', path: '/v1/agents/self', tag: 'agents', access: 'device', body: selfReportSchema,
    summary: 'The agent\'s report about itself: libp2p addresses (handed to its site peers when they lie in its own network or its site\'s boundaries), whether it offers the site-cache role, connected peers, cache usage, the last cache clear it carried out',
    responses: { 200: { description: 'the addresses kept (`peerAddresses`) and those refused with their reason (`refusedAddresses`)' } }
  }, async ({ ctx, body, device }) => {
    const answer = await services.devices.report(device!.id, body, ctx.ip)
    if (answer.refusedAddresses.length > 0) services.logger.warn({ deviceId: device!.id, observed: ctx.ip, refused: answer.refusedAddresses.slice(0, 8) }, 'refused peer addresses a device reported')
    return answer
  })

  routes.add({
    method: 'post', path: '/v1/agents/status', tag: 'agents', access: 'device', body: statusBatchSchema,
    summary: 'A batch of device-signed status records, the device\'s own or (from a site relay) its site\'s; answers once they are stored, with the acknowledged ones',
    responses: { 200: { description: 'acknowledged keys, rejections with reasons, duplicates; with `receipt: true`, the coordinator\'s signed receipt of the batch' } }
  }, async ({ body, device }) => {
    const result = await services.statuses.ingest(body.records, device!, { receipt: body.receipt === true })
    services.metrics.statusBatches.inc({ path: body.receipt === true ? 'relay' : 'direct' })
    return result
  })

  routes.add({
    method: 'get', path: '/v1/content/:sha256', tag: 'agents', access: 'device-or-viewer',
    summary: 'The chunk origin: content by SHA-256, whole or a byte range. A device is served only chunks of the packages it is assigned, or as a granted site cache prefetches',
    responses: {
      200: { description: 'the bytes; ETag is the quoted SHA-256, Cache-Control private and immutable', contentType: 'application/octet-stream' },
      206: { description: 'a byte range', contentType: 'application/octet-stream' },
      304: { description: 'If-None-Match named this content: it has not changed (it never does)' },
      403: { description: 'content-not-assigned: the chunk belongs to no package this device was handed' },
      404: { description: 'not stored' }
    }
  }, async ({ ctx, params, device }) => {
    const sha256 = params.sha256
    if (!SHA256_HEX.test(sha256)) throw new ValidationError('not a SHA-256')
    if (device !== undefined && !await services.contentAccess.allows(device, sha256)) {
      throw new ApiError(403, 'content-not-assigned', 'this chunk belongs to no package this device is assigned or, as a granted site cache, prefetches')
    }
    const path = services.content.pathOf(sha256)
    let size: number
    try {
      size = (await stat(path)).size
    } catch {
      throw new NotFoundError('content', sha256)
    }
    // Content-addressed and immutable: its hash is a strong validator, the same on every coordinator.
    const etag = `"${sha256}"`
    ctx.set('Cache-Control', 'private, max-age=31536000, immutable')
    ctx.set('ETag', etag)
    ctx.set('Accept-Ranges', 'bytes')
    if (ctx.get('if-none-match').split(',').some(tag => tag.trim() === etag || tag.trim() === '*')) {
      ctx.status = 304
      return
    }
    // A range asked for under another validator than this content's is answered whole.
    const ifRange = ctx.get('if-range')
    const range = ifRange === '' || ifRange === etag ? parseRange(ctx.get('range'), size) : undefined
    ctx.type = 'application/octet-stream'
    if (range === 'unsatisfiable') {
      ctx.set('Content-Range', `bytes */${size}`)
      throw new ApiError(416, 'range-not-satisfiable', `the content is ${size} bytes long`)
    }
    const { start, end } = range ?? { start: 0, end: size - 1 }
    const length = size === 0 ? 0 : end - start + 1
    if (range !== undefined) {
      ctx.status = 206
      ctx.set('Content-Range', `bytes ${start}-${end}/${size}`)
    }
    services.metrics.originRequests.inc()
    services.metrics.originBytes.inc(length)
    ctx.length = length
    ctx.body = length === 0 ? '' : createReadStream(path, { start, end })
  })

  routes.add({
    method: 'get', path: '/v1/stats', tag: 'system', access: 'viewer',
    summary: 'Counters of the coordinator: what the origin served since it started',
    responses: { 200: { description: '{ origin: { requests, bytesServed } }' } }
  }, async () => ({
    origin: {
      requests: (await services.metrics.originRequests.get()).values[0]?.value ?? 0,
      bytesServed: (await services.metrics.originBytes.get()).values[0]?.value ?? 0
    }
  }))

  routes.add({
    method: 'get', path: '/metrics', tag: 'system', access: 'viewer',
    summary: 'Prometheus metrics: tasks and devices by state, status records ingested, origin bytes served',
    responses: { 200: { description: 'the metrics in the Prometheus text format', contentType: 'text/plain' } }
  }, async ({ ctx }) => {
    ctx.type = services.metrics.registry.contentType
    return await services.metrics.registry.metrics()
  })
}
