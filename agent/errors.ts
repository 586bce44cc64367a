import { MeshdeployError } from '../protocol/index.js'

/** The coordinator answered with an error (problem+json). */
export class CoordinatorError extends MeshdeployError {
  readonly status: number
  readonly retryAfterMs?: number
  constructor (status: number, reason: string, message: string, retryAfterMs?: number) {
    super(message, reason)
    this.name = 'CoordinatorError'
    this.status = status
    if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs
  }
}

/** The coordinator could not be reached. */
export class CoordinatorUnreachableError extends MeshdeployError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'coordinator-unreachable', options)
    this.name = 'CoordinatorUnreachableError'
  }
}

/** The agent has no identity and was given no enrollment token. */
export class NotEnrolledError extends MeshdeployError {
  constructor () {
    super('this agent is not enrolled: start it once with --enroll-token', 'not-enrolled')
    this.name = 'NotEnrolledError'
  }
}

/** Another agent holds the data folder. */
export class DataFolderLockedError extends MeshdeployError {
  readonly dataDir: string
  constructor (dataDir: string, options?: ErrorOptions) {
    super(`the data folder ${dataDir} is in use by another agent`, 'data-folder-locked', options)
    this.name = 'DataFolderLockedError'
    this.dataDir = dataDir
  }
}

/** The package is for another platform or architecture. */
export class NotApplicableError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'not-applicable')
    this.name = 'NotApplicableError'
  }
}

/** Chunks in the cache failed their hash when the package file was assembled from them; they were dropped, to be fetched again. */
export class CachedChunksCorruptError extends MeshdeployError {
  readonly chunks: string[]
  constructor (chunks: string[], options?: ErrorOptions) {
    super(`${chunks.length} cached chunk(s) failed their hash when the package file was assembled; they were dropped`, 'cached-chunks-corrupt', options)
    this.name = 'CachedChunksCorruptError'
    this.chunks = chunks
  }
}

/** An installer ran and failed. */
export class InstallFailedError extends MeshdeployError {
  readonly exitCode: number | null
  readonly outputTail: string
  constructor (message: string, exitCode: number | null, outputTail: string) {
    super(message, 'install-failed')
    this.name = 'InstallFailedError'
    this.exitCode = exitCode
    this.outputTail = outputTail
  }
}

/** The installer finished but the detection rule still does not hold. */
export class DetectionFailedError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'detection-failed')
    this.name = 'DetectionFailedError'
  }
}

/** A chunk could not be had from any source. */
export class ChunkUnavailableError extends MeshdeployError {
  readonly index: number
  constructor (index: number, message: string, options?: ErrorOptions) {
    super(message, 'chunk-unavailable', options)
    this.name = 'ChunkUnavailableError'
    this.index = index
  }
}

/** agent.json cannot be read as an identity; the agent will not guess and will not enroll over it. */
export class IdentityCorruptError extends MeshdeployError {
  readonly path: string
  constructor (path: string, problem: string, options?: ErrorOptions) {
    super(`the identity file ${path} is damaged (${problem}); restore it from a backup, or move it away and enroll again`, 'identity-corrupt', options)
    this.name = 'IdentityCorruptError'
    this.path = path
  }
}

/** A manifest signed by a coordinator key that a followed rotation retired. */
export class RetiredKeyError extends MeshdeployError {
  readonly keyId: string
  constructor (keyId: string) {
    super(`the manifest is signed by ${keyId}, a coordinator key retired by a key rotation`, 'retired-key')
    this.name = 'RetiredKeyError'
    this.keyId = keyId
  }
}

/** Two different manifests with the same task revision: one of them is not what the coordinator signed for it. */
export class RevisionConflictError extends MeshdeployError {
  readonly revision: number
  constructor (taskId: string, revision: number) {
    super(`task ${taskId} revision ${revision} arrived with other content than the accepted one`, 'revision-conflict')
    this.name = 'RevisionConflictError'
    this.revision = revision
  }
}

/** An assignment whose manifest is for another task or revision than the assignment names. */
export class AssignmentMismatchError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'assignment-mismatch')
    this.name = 'AssignmentMismatchError'
  }
}

/** The data folder's file system has too little space for the task; the agent tries again later without counting a failed attempt. */
export class DiskFullError extends MeshdeployError {
  readonly path: string
  readonly neededBytes?: number
  readonly freeBytes?: number
  constructor (path: string, neededBytes?: number, freeBytes?: number, options?: ErrorOptions) {
    const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
    super(neededBytes !== undefined && freeBytes !== undefined
      ? `not enough disk space in ${path}: ${mib(neededBytes)} needed, ${mib(freeBytes)} free`
      : `the disk holding ${path} is full`, 'disk-full', options)
    this.name = 'DiskFullError'
    this.path = path
    if (neededBytes !== undefined) this.neededBytes = neededBytes
    if (freeBytes !== undefined) this.freeBytes = freeBytes
  }
}
