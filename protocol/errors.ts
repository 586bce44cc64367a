/**
 * Named errors shared by the coordinator and the agents. Callers and tests
 * identify a failure by its `name`; every class carries the data a caller
 * needs to act on it.
 */
export class MeshdeployError extends Error {
  /** A short machine-readable reason, stable across releases. */
  readonly reason: string

  constructor (message: string, reason: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'MeshdeployError'
    this.reason = reason
  }
}

/** The envelope, manifest or record could not be decoded or does not match its schema. */
export class MalformedError extends MeshdeployError {
  constructor (message: string, options?: ErrorOptions) {
    super(message, 'malformed', options)
    this.name = 'MalformedError'
  }
}

/** The signature does not verify against the named key. */
export class BadSignatureError extends MeshdeployError {
  constructor (message = 'signature does not verify') {
    super(message, 'bad-signature')
    this.name = 'BadSignatureError'
  }
}

/** The envelope names a key the verifier does not trust. */
export class UnknownKeyError extends MeshdeployError {
  readonly keyId: string
  constructor (keyId: string) {
    super(`signing key ${keyId} is not trusted`, 'unknown-key')
    this.name = 'UnknownKeyError'
    this.keyId = keyId
  }
}

/** The envelope was made for another purpose (payload type / domain). */
export class WrongDomainError extends MeshdeployError {
  readonly expected: string
  readonly actual: string
  constructor (expected: string, actual: string) {
    super(`expected a ${expected} envelope, got ${actual}`, 'wrong-domain')
    this.name = 'WrongDomainError'
    this.expected = expected
    this.actual = actual
  }
}

/** The signed document is past its expiry (beyond the clock-skew tolerance). */
export class ExpiredError extends MeshdeployError {
  readonly expiresAt: string
  constructor (expiresAt: string) {
    super(`expired at ${expiresAt}`, 'expired')
    this.name = 'ExpiredError'
    this.expiresAt = expiresAt
  }
}

/** The signed document claims to be issued in the future (beyond the tolerance). */
export class NotYetValidError extends MeshdeployError {
  readonly issuedAt: string
  constructor (issuedAt: string) {
    super(`issued in the future (${issuedAt}); check the device clock`, 'not-yet-valid')
    this.name = 'NotYetValidError'
    this.issuedAt = issuedAt
  }
}

/** A manifest revision lower than one already accepted (a rollback attempt). */
export class StaleRevisionError extends MeshdeployError {
  readonly known: number
  readonly offered: number
  constructor (known: number, offered: number) {
    super(`revision ${offered} is older than the accepted revision ${known}`, 'stale-revision')
    this.name = 'StaleRevisionError'
    this.known = known
    this.offered = offered
  }
}

/** Bytes whose SHA-256 does not match what was declared. */
export class HashMismatchError extends MeshdeployError {
  readonly expected: string
  readonly actual: string
  constructor (expected: string, actual: string, what = 'content') {
    super(`${what} hash mismatch: expected ${expected}, got ${actual}`, 'hash-mismatch')
    this.name = 'HashMismatchError'
    this.expected = expected
    this.actual = actual
  }
}

/** Input larger than its bound. */
export class TooLargeError extends MeshdeployError {
  readonly limitBytes: number
  constructor (what: string, limitBytes: number) {
    super(`${what} exceeds the limit of ${limitBytes} bytes`, 'too-large')
    this.name = 'TooLargeError'
    this.limitBytes = limitBytes
  }
}

/** Content that is not in a store. */
export class ContentNotFoundError extends MeshdeployError {
  readonly sha256: string
  constructor (sha256: string) {
    super(`content ${sha256} is not stored`, 'content-not-found')
    this.name = 'ContentNotFoundError'
    this.sha256 = sha256
  }
}

/** An archive entry that would land outside its destination. */
export class PathEscapeError extends MeshdeployError {
  readonly entry: string
  constructor (entry: string) {
    super(`archive entry ${JSON.stringify(entry)} escapes the destination folder`, 'path-escape')
    this.name = 'PathEscapeError'
    this.entry = entry
  }
}

/** An operation that ran out of time. */
export class TimeoutError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'timeout')
    this.name = 'TimeoutError'
  }
}

/** A document in a format version this software does not know. */
export class UnsupportedVersionError extends MeshdeployError {
  readonly version: number
  readonly supported: number
  constructor (what: string, version: number, supported: number) {
    super(`${what} format version ${version} is not supported (this software reads version ${supported}); update the agent`, 'unsupported-version')
    this.name = 'UnsupportedVersionError'
    this.version = version
    this.supported = supported
  }
}

/** Returns the error's name when it is one of ours, for logs and status messages. */
export function describeError (error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`
  return String(error)
}
