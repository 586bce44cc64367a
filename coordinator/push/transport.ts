import type { Readable } from 'node:stream'
import type { CredentialSecret } from '../credentials/types.js'
import type { PushFailureReason } from './types.js'

/**
 * How a push install reaches a host: open a session with one credential,
 * run commands in it, close it. SSH (ssh-transport.ts) is the one this
 * coordinator has; a Windows transport (WinRM or SMB with the service
 * control manager) would implement the same interface, with its own
 * install steps in place of posix.ts.
 */
export interface PushTransport {
  readonly name: string
  /**
   * Connects and logs in. Throws HostUnreachableError, HostKeyMismatchError
   * (from `checkHostKey`), AuthenticationRefusedError or ConnectionLostError.
   */
  open: (target: PushTarget, login: PushLogin, options: OpenOptions) => Promise<RemoteSession>
}

export interface PushTarget {
  /** A host name or an address (IPv6 without brackets). */
  address: string
  port: number
}

export interface PushLogin {
  user: string
  secret: CredentialSecret
}

/** The key a host presented: its SHA-256 fingerprint (SHA256:…) and algorithm. */
export interface PresentedHostKey {
  fingerprint: string
  keyType?: string
}

export interface OpenOptions {
  connectTimeoutMs: number
  /** Accepts the host's key, or throws HostKeyMismatchError; runs before any credential is sent. */
  checkHostKey: (key: PresentedHostKey) => Promise<void>
  signal?: AbortSignal
}

export interface CommandOptions {
  /** Bytes for the command's standard input (a password for sudo, a file to write); closed after. */
  stdin?: string | Readable
  timeoutMs: number
  signal?: AbortSignal
}

export interface CommandResult {
  /** null when the command was killed, timed out or the channel closed without a status. */
  exitCode: number | null
  signal?: string
  timedOut: boolean
  /** Standard output, cut at MAX_COMMAND_STDOUT_BYTES. */
  stdout: string
  /** The last bytes of standard output and error, interleaved. */
  outputTail: string
}

export interface RemoteSession {
  /** Runs a command line in the login user's shell. */
  exec: (command: string, options: CommandOptions) => Promise<CommandResult>
  close: () => void
}

/** Standard output kept for parsing (the host probe's answer); more is cut. */
export const MAX_COMMAND_STDOUT_BYTES = 256 * 1024

/** A failure of one step on one host, with the reason the results name. */
export class PushError extends Error {
  readonly reason: PushFailureReason
  constructor (reason: PushFailureReason, message: string) {
    super(message)
    this.name = 'PushError'
    this.reason = reason
  }
}

export class HostUnreachableError extends PushError {
  constructor (message: string) {
    super('unreachable', message)
    this.name = 'HostUnreachableError'
  }
}

/** The host presented another key than the one pinned or given: maybe not the host at all. Nothing was sent to it. */
export class HostKeyMismatchError extends PushError {
  readonly expected: string
  readonly presented: string
  constructor (expected: string, presented: string, why: string) {
    super('host-key-mismatch', `the host presented the key ${presented}, not ${expected} (${why}); nothing was sent to it`)
    this.name = 'HostKeyMismatchError'
    this.expected = expected
    this.presented = presented
  }
}

export class AuthenticationRefusedError extends PushError {
  constructor (message: string) {
    super('authentication-refused', message)
    this.name = 'AuthenticationRefusedError'
  }
}

export class ConnectionLostError extends PushError {
  constructor (message: string) {
    super('connection-lost', message)
    this.name = 'ConnectionLostError'
  }
}
