import { z } from 'zod'
import { fromUtf8, signedEnvelopeSchema, utf8, type SignedEnvelope } from '../../../protocol/index.js'
import { MAX_MESSAGE_BYTES, MAX_RECORDS_PER_MESSAGE } from './constants.js'
import { MalformedStatusMessageError, StatusMessageTooLargeError } from './errors.js'

/**
 * What a site's agents say on their status topic (every message is signed by
 * its sender's peer key, which is its device key):
 * - `records`: my own status records that the coordinator has not
 *   acknowledged yet (each signed by me); the site's relay takes them up.
 * - `receipt`: the coordinator's signed receipt of a relayed batch, passed
 *   on by the relay; each agent drops what it names from its outbox.
 * - `heartbeat`: I am here, and whether I reach the coordinator (the relay
 *   is elected among those that do); `relay` is whom I take for the relay.
 */
export type StatusMessage =
  | { type: 'records', records: SignedEnvelope[] }
  | { type: 'receipt', receipt: SignedEnvelope }
  | { type: 'heartbeat', reachesCoordinator: boolean, relay?: string }

const statusMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('records'), records: z.array(signedEnvelopeSchema).min(1).max(MAX_RECORDS_PER_MESSAGE) }).strict(),
  z.object({ type: z.literal('receipt'), receipt: signedEnvelopeSchema }).strict(),
  z.object({ type: z.literal('heartbeat'), reachesCoordinator: z.boolean(), relay: z.string().min(1).max(100).optional() }).strict()
])

export function encodeStatusMessage (message: StatusMessage): Uint8Array {
  const bytes = utf8(JSON.stringify(message))
  if (bytes.byteLength > MAX_MESSAGE_BYTES) throw new StatusMessageTooLargeError(bytes.byteLength, MAX_MESSAGE_BYTES)
  return bytes
}

/** Decodes one message; throws MalformedStatusMessageError on anything out of shape or too large. */
export function decodeStatusMessage (bytes: Uint8Array): StatusMessage {
  if (bytes.byteLength > MAX_MESSAGE_BYTES) throw new MalformedStatusMessageError(`a message of ${bytes.byteLength} bytes is larger than ${MAX_MESSAGE_BYTES}`)
  let decoded: unknown
  try {
    decoded = JSON.parse(fromUtf8(bytes))
  } catch (error) {
    throw new MalformedStatusMessageError('the message is not UTF-8 JSON', { cause: error })
  }
  // The message an idle site sends most, checked without the schema (same rules); anything else goes through it.
  const heartbeat = heartbeatOf(decoded)
  if (heartbeat !== undefined) return heartbeat
  const parsed = statusMessageSchema.safeParse(decoded)
  if (!parsed.success) throw new MalformedStatusMessageError(`the message is out of shape: ${z.prettifyError(parsed.error).slice(0, 500)}`)
  return parsed.data as StatusMessage
}

const HEARTBEAT_KEYS = new Set(['type', 'reachesCoordinator', 'relay'])

/** A well-formed heartbeat as the schema would accept it, or undefined (the schema then decides). */
function heartbeatOf (value: unknown): StatusMessage | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const candidate = value as Record<string, unknown>
  if (candidate.type !== 'heartbeat' || typeof candidate.reachesCoordinator !== 'boolean') return undefined
  for (const key of Object.keys(candidate)) if (!HEARTBEAT_KEYS.has(key)) return undefined
  const relay = candidate.relay
  if (relay === undefined) return { type: 'heartbeat', reachesCoordinator: candidate.reachesCoordinator }
  if (typeof relay !== 'string' || relay.length < 1 || relay.length > 100) return undefined
  return { type: 'heartbeat', reachesCoordinator: candidate.reachesCoordinator, relay }
}

/**
 * Splits records into `records` messages that each stay under the size and
 * count bounds. A record that alone is too large (none is: records are at
 * most 16 KiB) would throw.
 */
export function recordMessages (records: SignedEnvelope[], maxBytes = MAX_MESSAGE_BYTES): Array<StatusMessage & { type: 'records' }> {
  const out: Array<StatusMessage & { type: 'records' }> = []
  let current: SignedEnvelope[] = []
  let size = 40
  for (const record of records) {
    const recordBytes = JSON.stringify(record).length + 1
    if (current.length > 0 && (size + recordBytes > maxBytes || current.length >= MAX_RECORDS_PER_MESSAGE)) {
      out.push({ type: 'records', records: current })
      current = []
      size = 40
    }
    if (size + recordBytes > maxBytes) throw new StatusMessageTooLargeError(size + recordBytes, maxBytes)
    current.push(record)
    size += recordBytes
  }
  if (current.length > 0) out.push({ type: 'records', records: current })
  return out
}
