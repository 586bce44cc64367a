import busboy from 'busboy'
import type { Readable } from 'node:stream'
import { requireRole } from '../../auth/tokens.js'
import { ApiError, PayloadTooLargeError, UnsupportedMediaTypeError, ValidationError } from '../../errors.js'
import { summarizePackage, type PackageMetadata, type PackageUpload } from '../../packages/service.js'
import type { Services } from '../../services.js'
import type { CoordinatorContext, RouteModule } from '../context.js'

/** Multipart overhead allowed beyond the package size when judging Content-Length. */
const MULTIPART_SLACK_BYTES = 1024 * 1024

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
    const fail = (error: unknown): void => {
      if (failed) return
      failed = true
      ctx.req.unpipe(parser)
      ctx.set('Connection', 'close')
      // Stop the chunker and let it settle, so the clean-up sees every chunk it stored.
      file?.destroy(error as Error)
      void Promise.allSettled([ingest]).then(() => { reject(error) })
    }
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
    parser.on('filesLimit', () => { fail(new ValidationError('only one file part is accepted')) })
    parser.on('fieldsLimit', () => { fail(new ValidationError('too many fields')) })
    parser.on('partsLimit', () => { fail(new ValidationError('too many parts')) })
    parser.on('error', error => { fail(new ValidationError(`malformed multipart body: ${(error as Error).message}`)) })
    parser.on('close', () => {
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

export const packageRoutes: RouteModule = (router, services) => {
  router.post('/v1/packages', async ctx => {
    const principal = requireRole(ctx.state.principal, 'operator')
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
    const record = await upload.commit(metadata, principal.name)
    services.logger.info({ packageId: record.id, name: record.name, sizeBytes: record.sizeBytes, by: principal.name }, 'package added')
    ctx.status = 201
    ctx.set('Location', `/v1/packages/${record.id}`)
    ctx.body = summarizePackage(record)
  })

  router.get('/v1/packages', async ctx => {
    requireRole(ctx.state.principal, 'viewer')
    ctx.body = { packages: (await services.packages.list()).map(summarizePackage) }
  })

  router.get('/v1/packages/:id', async ctx => {
    requireRole(ctx.state.principal, 'viewer')
    const record = await services.packages.get(ctx.params.id)
    ctx.body = ctx.query.chunks === 'true' ? { ...summarizePackage(record), chunks: record.chunks } : summarizePackage(record)
  })

  router.delete('/v1/packages/:id', async ctx => {
    const principal = requireRole(ctx.state.principal, 'operator')
    await services.packages.get(ctx.params.id)
    const cancelledTasks = await services.tasks.cancelForPackage(ctx.params.id)
    const record = await services.packages.delete(ctx.params.id)
    services.logger.info({ packageId: record.id, cancelledTasks, by: principal.name }, 'package deleted')
    ctx.body = {
      deleted: summarizePackage(record),
      cancelledTasks,
      message: cancelledTasks.length === 0 ? 'deleted; no unfinished task used it' : `deleted; ${cancelledTasks.length} unfinished task(s) that used it were cancelled`
    }
  })
}
