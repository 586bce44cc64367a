import { z } from 'zod'
import { openEnvelope, sealEnvelope, type KeyResolver, type SignedEnvelope, type SigningKey } from './envelope.js'
import { MeshdeployError } from './errors.js'
import { utf8 } from './encoding.js'
import { parseJsonPayload } from './json-payload.js'

/**
 * A device certificate: the coordinator's signed statement that a libp2p
 * peer id belongs to an enrolled device of a site, until an expiry. Agents
 * present theirs to every peer they connect to and admit only peers with a
 * valid, unexpired, unrevoked one: trust without handing every agent the
 * list of every enrolled device.
 */
export const DEVICE_CERTIFICATE_DOMAIN = 'meshdeploy/device-certificate/v1'

/** A certificate envelope is small; anything larger is refused unread. */
export const MAX_DEVICE_CERTIFICATE_BYTES = 2048
/** How long a certificate holds. @default 7 days */
export const DEFAULT_DEVICE_CERTIFICATE_LIFETIME_MS = 7 * 24 * 3600 * 1000
/** Clock difference between two agents that a certificate's times tolerate. */
export const DEVICE_CERTIFICATE_SKEW_MS = 5 * 60 * 1000

export const deviceCertificateSchema = z.object({
  type: z.literal('meshdeploy.device-certificate'),
  deviceId: z.string().min(1).max(100),
  peerId: z.string().min(1).max(100),
  site: z.string().min(1).max(100),
  issuedAt: z.iso.datetime({ offset: true }),
  expiresAt: z.iso.datetime({ offset: true })
}).strict()

export type DeviceCertificate = z.infer<typeof deviceCertificateSchema>

export type DeviceCertificateProblem = 'certificate-expired' | 'certificate-not-yet-valid' | 'certificate-peer-mismatch' | 'certificate-revoked'

/** A certificate that is well signed but does not admit the peer presenting it. */
export class DeviceCertificateError extends MeshdeployError {
  constructor (reason: DeviceCertificateProblem, message: string) {
    super(message, reason)
    this.name = 'DeviceCertificateError'
  }
}

export function signDeviceCertificate (certificate: DeviceCertificate, key: SigningKey): SignedEnvelope {
  return sealEnvelope(DEVICE_CERTIFICATE_DOMAIN, utf8(JSON.stringify(deviceCertificateSchema.parse(certificate))), key)
}

export interface OpenDeviceCertificateOptions {
  /** The coordinator keys trusted to sign certificates. */
  keys: KeyResolver
  now: number
  /** The peer id of the connection it was presented on: the certificate must name it. */
  peerId?: string
  /** Whether the coordinator revoked the device. @default never */
  isRevoked?: (deviceId: string) => boolean
  /** @default DEVICE_CERTIFICATE_SKEW_MS */
  clockSkewMs?: number
}

/**
 * Verifies a certificate's signature over the bytes as received, then its
 * validity for the peer presenting it. Throws MalformedError, TooLargeError,
 * WrongDomainError, UnknownKeyError, BadSignatureError or
 * DeviceCertificateError.
 */
export function openDeviceCertificate (envelope: unknown, options: OpenDeviceCertificateOptions): DeviceCertificate {
  const opened = openEnvelope(envelope, { domain: DEVICE_CERTIFICATE_DOMAIN, keys: options.keys, maxPayloadBytes: MAX_DEVICE_CERTIFICATE_BYTES })
  const certificate = parseJsonPayload(opened.payload, deviceCertificateSchema, 'device certificate')
  const skew = options.clockSkewMs ?? DEVICE_CERTIFICATE_SKEW_MS
  if (Date.parse(certificate.expiresAt) + skew <= options.now) {
    throw new DeviceCertificateError('certificate-expired', `the certificate of device ${certificate.deviceId} expired at ${certificate.expiresAt}`)
  }
  if (Date.parse(certificate.issuedAt) - skew > options.now) {
    throw new DeviceCertificateError('certificate-not-yet-valid', `the certificate of device ${certificate.deviceId} is issued in the future (${certificate.issuedAt})`)
  }
  if (options.peerId !== undefined && certificate.peerId !== options.peerId) {
    throw new DeviceCertificateError('certificate-peer-mismatch', `the certificate names peer ${certificate.peerId}, not ${options.peerId}`)
  }
  if (options.isRevoked?.(certificate.deviceId) === true) {
    throw new DeviceCertificateError('certificate-revoked', `device ${certificate.deviceId} was revoked`)
  }
  return certificate
}
