import { z } from 'zod'
import { decodeEnvelope, openEnvelope, sealEnvelope, verifyDecodedEnvelopeAsync, type KeyResolver, type SignedEnvelope, type SigningKey } from './envelope.js'
import { MalformedError } from './errors.js'
import { parseJsonPayload } from './json-payload.js'
import { keyIdOf } from './keys.js'
import { fromUtf8, utf8 } from './encoding.js'
import { MAX_MESSAGE_CHARS, MAX_STATUS_RECORD_BYTES } from './limits.js'
import type { SignatureCheck } from './verifier-pool.js'

export const STATUS_DOMAIN = 'meshdeploy/status/v1'

/**
 * States of one device in one task. `pending` (released, not yet heard from)
 * is set by the coordinator only; every other state is reported by the
 * device.
 */
export const DEVICE_TASK_STATES = [
  'pending',
  'queued',
  'deferred-vpn',
  'waiting-for-window',
  'downloading',
  'verifying',
  'installing',
  'succeeded',
  'succeeded-reboot-pending',
  'already-installed',
  'failed',
  'not-applicable',
  'expired',
  'cancelled'
] as const

export type DeviceTaskState = typeof DEVICE_TASK_STATES[number]

/** States after which the device does nothing more for the task revision. */
export const SETTLED_STATES: ReadonlySet<DeviceTaskState> = new Set([
  'succeeded', 'succeeded-reboot-pending', 'already-installed', 'not-applicable', 'expired', 'cancelled'
])

/** States that count as a successful outcome. */
export const SUCCESS_STATES: ReadonlySet<DeviceTaskState> = new Set([
  'succeeded', 'succeeded-reboot-pending', 'already-installed'
])

export const statusRecordSchema = z.object({
  type: z.literal('meshdeploy.status'),
  deviceId: z.string().min(1).max(100),
  taskId: z.string().min(1).max(100),
  revision: z.number().int().min(1),
  /** Run number, 1 for the first attempt. */
  attempt: z.number().int().min(1).max(1000),
  /** Grows with every record the device issues for the task. */
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  state: z.enum(DEVICE_TASK_STATES),
  /** When the device issued the record, ms since the epoch. */
  at: z.number().int().min(0),
  bytesTotal: z.number().int().min(0),
  bytesDone: z.number().int().min(0),
  bytesFromPeers: z.number().int().min(0),
  bytesFromOrigin: z.number().int().min(0),
  exitCode: z.number().int().nullable().optional(),
  message: z.string().max(MAX_MESSAGE_CHARS).optional(),
  /** Failed with attempts left: when the device will try again, ms since the epoch. */
  retryAt: z.number().int().min(0).optional(),
  /** waiting-for-window (or a reboot waiting for one): when the next maintenance window that fits opens, ms since the epoch. */
  windowAt: z.number().int().min(0).optional(),
  /** Failed with no attempts left. */
  final: z.boolean().optional()
}).strict()

export type StatusRecord = z.infer<typeof statusRecordSchema>

export function signStatusRecord (record: StatusRecord, deviceKey: SigningKey): SignedEnvelope {
  const parsed = statusRecordSchema.safeParse(record)
  if (!parsed.success) throw new MalformedError(`status record: ${z.prettifyError(parsed.error)}`)
  return sealEnvelope(STATUS_DOMAIN, utf8(JSON.stringify(parsed.data)), deviceKey)
}

/**
 * Verifies a device-signed status record and decodes it. The key resolver
 * decides whose keys are trusted; the caller must also check that the record's
 * deviceId is the device that owns the key.
 */
export function openStatusRecord (envelope: unknown, keys: KeyResolver): { record: StatusRecord, keyId: string } {
  const opened = openEnvelope(envelope, { domain: STATUS_DOMAIN, keys, maxPayloadBytes: MAX_STATUS_RECORD_BYTES })
  return { record: parseRecord(opened.payload), keyId: opened.keyId }
}

function parseRecord (payload: Uint8Array): StatusRecord {
  return parseJsonPayload(payload, statusRecordSchema, 'status record')
}

/** A decoded status record whose signature is not checked yet. */
export interface UnverifiedStatusRecord {
  /** What the record says; nothing in it may be trusted before `verify` resolved. */
  readonly claimed: StatusRecord
  /** The envelope's payload and signature as received (base64), to compare with a stored copy. */
  readonly payload: string
  readonly signature: string
  /** Checks the signature against the key of the device the record names, off the main thread (libuv's pool, or `check`); throws UnknownKeyError or BadSignatureError. */
  verify: (publicKey: Uint8Array, check?: SignatureCheck) => Promise<StatusRecord>
}

/**
 * Decodes a status record without verifying it: for a verifier that learns
 * whose key to check it with from the record itself (a relay's batch carries
 * many devices' records), or that may find the same bytes stored already.
 * Throws MalformedError, TooLargeError or WrongDomainError.
 */
export function decodeStatusRecord (envelope: unknown): UnverifiedStatusRecord {
  const decoded = decodeEnvelope(envelope, { domain: STATUS_DOMAIN, maxPayloadBytes: MAX_STATUS_RECORD_BYTES })
  const claimed = parseRecord(decoded.payload)
  const received = envelope as SignedEnvelope
  return {
    claimed,
    payload: received.payload,
    signature: received.signature,
    verify: async (publicKey, check) => {
      await verifyDecodedEnvelopeAsync(decoded, keyId => keyId === keyIdOf(publicKey) ? publicKey : undefined, check)
      return claimed
    }
  }
}

/**
 * Opens a status record whose signer is only known from the record itself:
 * `keyOf` is asked for the key of the device the record claims (it may throw
 * to refuse that device), and the signature is checked against that key off
 * the main thread. A record that verifies was signed by the device it names.
 * Throws the named errors of `openStatusRecord`, or `keyOf`'s.
 */
export async function openStatusRecordAsync (envelope: unknown, keyOf: (deviceId: string) => Promise<Uint8Array> | Uint8Array): Promise<{ record: StatusRecord, keyId: string }> {
  const unverified = decodeStatusRecord(envelope)
  const record = await unverified.verify(await keyOf(unverified.claimed.deviceId))
  return { record, keyId: (envelope as SignedEnvelope).keyId }
}

/**
 * The gossip topic a site's agents exchange status records on. The
 * organisation tag (from the organisation's first coordinator key) keeps two
 * organisations' agents on one LAN apart; the coordinator hands each agent
 * its topic, and an agent that never heard it derives the same from the key
 * it pinned.
 */
export function statusTopicOf (organisationKeyId: string, site: string): string {
  return `meshdeploy/status/1/${organisationKeyId.slice(0, 16)}/${site}`
}

/** The de-duplication key of a record. */
export function statusRecordKey (record: Pick<StatusRecord, 'deviceId' | 'taskId' | 'attempt' | 'seq'>): string {
  return `${record.deviceId}/${record.taskId}/${record.attempt}/${record.seq}`
}

/** Whether record `a` comes after record `b` for the same device and task. */
export function isNewerRecord (a: Pick<StatusRecord, 'revision' | 'attempt' | 'seq'>, b: Pick<StatusRecord, 'revision' | 'attempt' | 'seq'>): boolean {
  if (a.revision !== b.revision) return a.revision > b.revision
  if (a.attempt !== b.attempt) return a.attempt > b.attempt
  return a.seq > b.seq
}
