import busboy from 'busboy'
import type { Readable } from 'node:stream'
import { z } from 'zod'
import { ApiError, PayloadTooLargeError, RequestTimeoutError, UnsupportedMediaTypeError, ValidationError } from '../../errors.js'
import { DEFAULT_BODY_IDLE_TIMEOUT_MS } from '../request-limits.js'
import { packageMetadataSchema, packagePatchSchema, summarizePackage, type PackageMetadata, type PackageUpload } from '../../packages/service.js'
import type { Services } from '../../services.js'
import type { CoordinatorContext, RouteModule } from '../context.js'

/** Multipart overhead allowed beyond the package size when judging Content-Length. */
const MULTIPART_SLACK_BYTES = 1024 * 1024

const packageQuerySchema = z.object({ chunks: z.enum(['true', 'false']).optional() }).strict()

/**
 * Reads a multipart upload: a `metadata` JSON field and one `file` part,
 * streamed into the content store as it arrives.
 */
async function receiveUpload (ctx: CoordinatorContext, services: Services, upload: PackageUpload): Promise<PackageMetadata> {
  let metadata: PackageMetadata | undefined
  let ingest: Promise<void> | undefined
  await new Promise<void>((resolve, reject) => {
    let parser: busboy.Busboy
    try {
      parser = busboy({
        headers: ctx.req.headers,
        limits: { files: 1, fields: 4, parts: 5, fieldSize: 64 * 1024, fieldNameSize: 100, fileSize: services.packages.maxPackageSizeBytes, headerPairs: 20 }
      })
    } catch (error) {
      reject(new ValidationError(`not a multipart body: ${(error as Error).message}`))
      return
    }
    let failed = false
    let file: Readable | undefined
    // An upload may be slow, but it may not stall: the clock restarts with every piece that arrives.
    const idleTimeoutMs = ctx.state.limits?.bodyIdleTimeoutMs ?? DEFAULT_BODY_IDLE_TIMEOUT_MS
    let idle: NodeJS.Timeout | undefined
    const arm = (): void => {
      clearTimeout(idle)
      idle = setTimeout(() => { fail(new RequestTimeoutError(`the upload stalled for more than ${idleTimeoutMs} ms`)) }, idleTimeoutMs)
    }
    const fail = (error: unknown): void => {
      if (failed) return
      failed = true
      clearTimeout(idle)
      ctx.req.off('data', arm)
      ctx.req.unpipe(parser)
      ctx.set('Connection', 'close')
      // Stop the chunker and let it settle, so the clean-up sees every chunk it stored.
      file?.destroy(error as Error)
      void Promise.allSettled([ingest]).then(() => { reject(error) })
    }
    ctx.req.on('data', arm)
    ctx.req.once('end', () => { clearTimeout(idle) })
    arm()
    parser.on('field', (name, value, info) => {
      if (name !== 'metadata') return fail(new ValidationError(`unexpected field ${JSON.stringify(name)}; only metadata and file are accepted`))
      if (info.valueTruncated) return fail(new PayloadTooLargeError('the metadata field is larger than 64 KiB'))
      try {
        metadata = services.packages.parseMetadata(value)
      } catch (error) {
        fail(error)
      }
    })
    parser.on('file', (name, stream: Readable, info) => {
      if (name !== 'file') {
        stream.resume()
        return fail(new ValidationError(`unexpected file part ${JSON.stringify(name)}; the package goes in the part named file`))
      }
      file = stream
      stream.on('limit', () => { stream.destroy(new PayloadTooLargeError(`the package is larger than the limit of ${services.packages.maxPackageSizeBytes} bytes`)) })
      ingest = upload.ingest(stream, info.filename ?? 'package')
      ingest.catch(fail)
    })
    parser.on('filesLimit', () => { fail(new ApiError(400, 'too-many-parts', 'only one file part is accepted')) })
    parser.on('fieldsLimit', () => { fail(new ApiError(400, 'too-many-parts', 'too many fields')) })
    parser.on('partsLimit', () => { fail(new ApiError(400, 'too-many-parts', 'too many parts')) })
    parser.on('error', error => { fail(new ValidationError(`malformed multipart body: ${(error as Error).message}`)) })
    parser.on('close', () => {
      clearTimeout(idle)
      if (ingest === undefined) {
        resolve()
        return
      }
      ingest.then(resolve, fail)
    })
    ctx.req.on('aborted', () => { fail(new ApiError(400, 'aborted', 'the client closed the upload')) })
    ctx.req.pipe(parser)
  })
  if (ingest === undefined) throw new ValidationError('the request has no file part')
  if (metadata === undefined) throw new ValidationError('the request has no metadata field')
  return metadata
}

export const packageRoutes: RouteModule = (routes, services) => {
  routes.add({
    method: 'post', path: '/v1/packages', tag: 'packages', access: 'operator',
    rawBody: { contentType: 'multipart/form-data', description: 'a `metadata` field (JSON: name, version, description, publisher, kind, platform, arch, detection, exitCodes, uninstall, selfService, publisherSignature, dependsOn, supersedes) and a `file` part', schema: packageMetadataSchema },
    summary: 'Upload a package: streamed, chunked and hashed as it arrives; with security verification on, a publisher signature must verify',
    responses: { 201: { description: 'the package' }, 409: { description: 'the same content is already a package' }, 413: { description: 'larger than the limit; nothing stored' }, 422: { description: 'the publisher signature is missing, made with an unregistered key, or does not verify; or a dependency or superseded package is missing, undetectable or on a cycle (dependency-cycle, supersedence-cycle, …); nothing stored' } }
  }, async ({ ctx, actor }) => {
    if (!ctx.is('multipart/form-data')) throw new UnsupportedMediaTypeError('upload a package as multipart/form-data with metadata and file parts')
    const declared = Number(ctx.get('content-length'))
    if (Number.isFinite(declared) && declared > services.packages.maxPackageSizeBytes + MULTIPART_SLACK_BYTES) {
      ctx.set('Connection', 'close')
      throw new PayloadTooLargeError(`the package is larger than the limit of ${services.packages.maxPackageSizeBytes} bytes`)
    }
    const upload = services.packages.beginUpload()
    let metadata: PackageMetadata
    try {
      metadata = await receiveUpload(ctx, services, upload)
    } catch (error) {
      await upload.abort()
      throw error
    }
    const record = await upload.commit(metadata, actor)
    services.logger.info({ packageId: record.id, name: record.name, sizeBytes: record.sizeBytes, by: actor }, 'package added')
    ctx.status = 201
    ctx.set('Location', `/v1/packages/${record.id}`)
    return summarizePackage(record)
  })

  routes.add({
    method: 'get', path: '/v1/packages', tag: 'packages', access: 'viewer',
    summary: 'List packages',
    responses: { 200: { description: '{ packages }' } }
  }, async () => ({ packages: (await services.packages.list()).map(summarizePackage) }))

  routes.add({
    method: 'get', path: '/v1/packages/:id', tag: 'packages', access: 'viewer', query: packageQuerySchema,
    summary: 'A package; with chunks=true, its ordered chunk hashes',
    responses: { 200: { description: 'the package' }, 404: { description: 'no such package' } }
  }, async ({ params, query }) => {
    const record = await services.packages.get(params.id)
    return query.chunks === 'true' ? { ...summarizePackage(record), chunks: record.chunks } : summarizePackage(record)
  })

  routes.add({
    method: 'patch', path: '/v1/packages/:id', tag: 'packages', access: 'operator', body: packagePatchSchema,
    summary: 'Edit a package: name, version, description, publisher, kind, platform, arch, detection, exitCodes, uninstall, selfService, dependsOn, supersedes; unfinished tasks get a new manifest revision',
    responses: { 200: { description: 'the package, with the tasks whose manifests were revised' }, 400: { description: 'invalid or inconsistent (a detection rule of another platform)' }, 404: { description: 'no such package' } }
  }, async ({ params, body, actor }) => {
    const record = await services.packages.update(params.id, body, actor)
    const revisedTasks = await services.tasks.refreshForPackage(record)
    services.logger.info({ packageId: record.id, fields: Object.keys(body), revisedTasks, by: actor }, 'package edited')
    return { ...summarizePackage(record), revisedTasks }
  })

  routes.add({
    method: 'post', path: '/v1/packages/:id/switch-tasks', tag: 'packages', access: 'operator',
    summary: 'Switch the unfinished install tasks of the packages this one supersedes to this one, in one call: each gets a new revision deploying it, keeps its settings, and also targets the devices that hold the old package',
    responses: { 200: { description: '{ switchedTasks }' }, 404: { description: 'no such package' }, 409: { description: 'the package supersedes nothing (supersedes-nothing)' } }
  }, async ({ params, actor }) => {
    const record = await services.packages.get(params.id)
    const switchedTasks = await services.tasks.switchToSuperseding(record, actor)
    await services.scheduler.tick()
    services.logger.info({ packageId: record.id, switchedTasks, by: actor }, 'tasks switched to a superseding package')
    return { packageId: record.id, switchedTasks, message: switchedTasks.length === 0 ? 'no unfinished task deployed a package this one supersedes' : `${switchedTasks.length} task(s) now deploy ${record.name} ${record.version}` }
  })

  routes.add({
    method: 'delete', path: '/v1/packages/:id', tag: 'packages', access: 'operator',
    summary: 'Delete a package and its chunks; unfinished tasks that use it are cancelled',
    responses: { 200: { description: 'what was deleted and which tasks were cancelled' }, 404: { description: 'no such package' }, 409: { description: 'other packages depend on it or supersede it (package-in-use)' } }
  }, async ({ params, actor }) => {
    await services.packages.assertDeletable(params.id)
    const cancelledTasks = await services.tasks.cancelForPackage(params.id, actor)
    const record = await services.packages.delete(params.id)
    services.logger.info({ packageId: record.id, cancelledTasks, by: actor }, 'package deleted')
    return {
      deleted: summarizePackage(record),
      cancelledTasks,
      message: cancelledTasks.length === 0 ? 'deleted; no unfinished task used it' : `deleted; ${cancelledTasks.length} unfinished task(s) that used it were cancelled`
    }
  })
}
