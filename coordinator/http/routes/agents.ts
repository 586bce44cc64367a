import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { z } from 'zod'
import { MAX_ASSIGNMENT_WAIT_SECONDS, MAX_STATUS_BATCH_RECORDS, SHA256_HEX, toHex } from '../../../protocol/index.js'
import { enrollRequestSchema } from '../../devices/service.js'
import { ApiError, NotFoundError, ValidationError } from '../../errors.js'
import { parseWith } from '../../validation.js'
import { readJson } from '../body.js'
import { requireDevice, type RouteModule } from '../context.js'

const statusBatchSchema = z.object({
  records: z.array(z.unknown()).min(1).max(MAX_STATUS_BATCH_RECORDS)
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

export const agentRoutes: RouteModule = (router, services) => {
  router.post('/v1/agents/enroll', async ctx => {
    const request = parseWith(enrollRequestSchema, await readJson(ctx), 'enrollment')
    const { device, credential } = await services.devices.enroll(request, ctx.ip)
    services.logger.info({ deviceId: device.id, hostname: device.hostname, site: device.site }, 'device enrolled')
    ctx.status = 201
    ctx.body = {
      deviceId: device.id,
      credential,
      peerId: device.peerId,
      site: device.site,
      groups: device.groups,
      coordinatorPublicKey: toHex(services.key.publicKey),
      coordinatorKeyId: services.key.keyId
    }
  })

  router.get('/v1/agents/assignments', async ctx => {
    const device = requireDevice(ctx)
    const waitSeconds = ctx.query.waitSeconds === undefined ? 0 : Number(ctx.query.waitSeconds)
    if (!Number.isFinite(waitSeconds) || waitSeconds < 0 || waitSeconds > MAX_ASSIGNMENT_WAIT_SECONDS) {
      throw new ValidationError(`waitSeconds must be between 0 and ${MAX_ASSIGNMENT_WAIT_SECONDS}`)
    }
    const etag = typeof ctx.query.etag === 'string' && ctx.query.etag !== '' ? ctx.query.etag : undefined
    const closed = new AbortController()
    ctx.req.on('close', () => { closed.abort() })
    ctx.body = await services.assignments.waitFor(device.id, etag, waitSeconds * 1000, closed.signal)
  })

  router.post('/v1/agents/status', async ctx => {
    const device = requireDevice(ctx)
    const batch = parseWith(statusBatchSchema, await readJson(ctx), 'status batch')
    ctx.body = await services.statuses.ingest(batch.records, device)
  })

  router.get('/v1/content/:sha256', async ctx => {
    if (ctx.state.device === undefined && ctx.state.principal?.kind !== 'operator') ctx.throw(403)
    const sha256 = ctx.params.sha256
    if (!SHA256_HEX.test(sha256)) throw new ValidationError('not a SHA-256')
    const path = services.content.pathOf(sha256)
    let size: number
    try {
      size = (await stat(path)).size
    } catch {
      throw new NotFoundError('content', sha256)
    }
    const range = parseRange(ctx.get('range'), size)
    ctx.set('Cache-Control', 'private, max-age=31536000, immutable')
    ctx.set('Accept-Ranges', 'bytes')
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
    services.origin.chunksServed += range === undefined ? 1 : 0
    services.origin.bytesServed += length
    ctx.length = length
    ctx.body = length === 0 ? '' : createReadStream(path, { start, end })
  })

  router.get('/v1/stats', ctx => {
    if (ctx.state.principal?.kind !== 'operator') ctx.throw(403)
    ctx.body = { origin: services.origin }
  })
}
