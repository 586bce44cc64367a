import { MIB } from '../../../protocol/index.js'

/** Status records, receipts and presence of a site's agents travel over gossipsub, one topic per organisation and site. */
export { statusTopicOf } from '../../../protocol/index.js'

/**
 * Largest message published or accepted. gossipsub drops messages over
 * 4 MiB silently; records are published in messages well below that, and a
 * receipt of a whole batch fits.
 */
export const MAX_MESSAGE_BYTES = 1 * MIB
/** Records in one `records` message. */
export const MAX_RECORDS_PER_MESSAGE = 200
/** Bound on one inbound gossipsub RPC (a message and its framing). */
export const MAX_RPC_BYTES = 2 * MIB
/** Bound on what waits to be written to one peer. */
export const MAX_OUTBOUND_BUFFER_BYTES = 4 * MIB
/** How often an agent says it is there and whether it reaches the coordinator. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 1500
/** A peer not heard for this long no longer counts for the relay election. */
export const DEFAULT_LIVENESS_MS = 5000
/** gossipsub's own heartbeat (mesh maintenance). */
export const GOSSIP_HEARTBEAT_INTERVAL_MS = 700
