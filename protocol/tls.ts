import https from 'node:https'
import type { Duplex } from 'node:stream'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import { MeshdeployError } from './errors.js'

/**
 * How a client trusts the coordinator's HTTPS certificate: a CA bundle (the
 * certificate must chain to it and name the host), the SHA-256 fingerprint of
 * the certificate itself (a self-signed certificate works; nothing else is
 * accepted), or both. Neither: the system's CAs.
 */
export interface TlsTrust {
  /** PEM of the CA certificate(s). */
  caPem?: string
  /** SHA-256 of the certificate (DER), hex, with or without colons. */
  pinSha256?: string
}

/** The certificate the server showed is not the pinned one. */
export class CertificatePinError extends MeshdeployError {
  readonly expected: string
  readonly actual: string | undefined
  constructor (expected: string, actual: string | undefined) {
    super(`the coordinator's certificate has SHA-256 ${actual ?? '(none)'}, not the pinned ${expected}`, 'certificate-pin-mismatch')
    this.name = 'CertificatePinError'
    this.expected = expected
    this.actual = actual
  }
}

/** The certificate does not chain to a trusted CA or does not name the host. */
export class UntrustedCertificateError extends MeshdeployError {
  readonly code: string
  constructor (code: string, message: string, options?: ErrorOptions) {
    super(`the coordinator's certificate is not trusted (${code}): ${message}`, 'untrusted-certificate', options)
    this.name = 'UntrustedCertificateError'
    this.code = code
  }
}

/** Plain HTTP where it was not asked for. */
export class InsecureTransportError extends MeshdeployError {
  constructor (url: string, flag: string) {
    super(`${url} is plain HTTP: credentials and manifests would cross the network unprotected; use https:// or pass ${flag} to accept it`, 'insecure-transport')
    this.name = 'InsecureTransportError'
  }
}

/** Normalises a fingerprint to 64 lowercase hex digits; throws TypeError on anything else. */
export function normalizeFingerprint (fingerprint: string): string {
  const hex = fingerprint.replace(/:/g, '').trim().toLowerCase()
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new TypeError('a SHA-256 fingerprint is 64 hex digits (colons allowed)')
  return hex
}

/** The SHA-256 fingerprint of a PEM certificate, as `--pin-sha256` takes it. */
export function certificateFingerprint (pem: string): string {
  return normalizeFingerprint(new X509Certificate(pem).fingerprint256)
}

const CERTIFICATE_ERROR_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED', 'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH', 'INVALID_CA'
])

/** The named error for a failed TLS handshake with the coordinator, or undefined when the failure is not about trust. */
export function trustFailureOf (error: unknown): MeshdeployError | undefined {
  if (error instanceof CertificatePinError) return error
  const code = (error as { code?: unknown }).code
  if (typeof code === 'string' && CERTIFICATE_ERROR_CODES.has(code)) return new UntrustedCertificateError(code, (error as Error).message, { cause: error })
  return undefined
}

/**
 * An HTTPS agent that hands a connection to a request only after the
 * certificate matched the pin: no byte of the request (and so no credential)
 * is written to a server that is not the pinned one.
 */
class PinnedAgent extends https.Agent {
  constructor (private readonly pinSha256: string, private readonly verifyChain: boolean, options: https.AgentOptions) {
    // Resumed sessions would skip the certificate; every connection shows it afresh.
    super({ ...options, maxCachedSessions: 0 })
  }

  override createConnection (options: tls.ConnectionOptions, done: (error: Error | null, socket?: Duplex) => void): undefined {
    const socket = tls.connect({ ...options, rejectUnauthorized: this.verifyChain })
    const onError = (error: Error): void => { done(error) }
    socket.once('error', onError)
    socket.once('secureConnect', () => {
      socket.off('error', onError)
      const actual = socket.getPeerCertificate().fingerprint256
      const normalized = actual === undefined ? undefined : normalizeFingerprint(actual)
      if (normalized !== this.pinSha256) {
        const error = new CertificatePinError(this.pinSha256, normalized)
        socket.destroy()
        done(error)
        return
      }
      done(null, socket)
    })
    return undefined
  }
}

/** An HTTPS agent that trusts the coordinator the way `trust` says. */
export function createHttpsAgent (trust: TlsTrust, options: https.AgentOptions = {}): https.Agent {
  const withCa: https.AgentOptions = trust.caPem !== undefined ? { ...options, ca: trust.caPem } : options
  if (trust.pinSha256 !== undefined) return new PinnedAgent(normalizeFingerprint(trust.pinSha256), trust.caPem !== undefined, withCa)
  return new https.Agent(withCa)
}
