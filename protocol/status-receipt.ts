import { z } from 'zod'
import { openEnvelope, sealEnvelope, type KeyResolver, type SignedEnvelope, type SigningKey } from './envelope.js'
import { MalformedError } from './errors.js'
import { utf8 } from './encoding.js'
import { parseJsonPayload } from './json-payload.js'
import { KIB, MAX_STATUS_BATCH_RECORDS } from './limits.js'

export const STATUS_RECEIPT_DOMAIN = 'meshdeploy/status-receipt/v1'
/** A receipt names at most a whole batch's keys (each at most ~230 characters). */
export const MAX_STATUS_RECEIPT_BYTES = 512 * KIB

const recordKey = z.string().min(7).max(240)

/**
 * The coordinator's word, signed with its key, on what it did with a
 * relay's batch: the records it stored (now or before) and those it refused
 * for good. A relay passes the receipt on to its site unchanged, and each
 * agent drops its records from its outbox only on a receipt that verifies
 * against the coordinator key it pinned, so a relay cannot make anybody drop
 * a record the coordinator does not hold.
 */
export const statusReceiptSchema = z.object({
  type: z.literal('meshdeploy.status-receipt'),
  /** The device that sent the batch. */
  relayDeviceId: z.string().min(1).max(100),
  acknowledged: z.array(recordKey).max(MAX_STATUS_BATCH_RECORDS),
  /**
   * Records refused for a reason that is the record's own (its task does not
   * exist, its device is not active): the device drops them. Records that do
   * not verify are never named, as the relay may have altered them.
   */
  rejected: z.array(z.object({ key: recordKey, reason: z.string().max(100) }).strict()).max(MAX_STATUS_BATCH_RECORDS),
  /** When the coordinator answered, ms since the epoch. */
  at: z.number().int().min(0)
}).strict()

export type StatusReceipt = z.infer<typeof statusReceiptSchema>

export function signStatusReceipt (receipt: StatusReceipt, key: SigningKey): SignedEnvelope {
  const parsed = statusReceiptSchema.safeParse(receipt)
  if (!parsed.success) throw new MalformedError(`status receipt: ${z.prettifyError(parsed.error)}`)
  return sealEnvelope(STATUS_RECEIPT_DOMAIN, utf8(JSON.stringify(parsed.data)), key)
}

/** Verifies a receipt against the coordinator's keys and decodes it; throws the named envelope errors or MalformedError. */
export function openStatusReceipt (envelope: unknown, keys: KeyResolver): StatusReceipt {
  const opened = openEnvelope(envelope, { domain: STATUS_RECEIPT_DOMAIN, keys, maxPayloadBytes: MAX_STATUS_RECEIPT_BYTES })
  return parseJsonPayload(opened.payload, statusReceiptSchema, 'status receipt')
}
