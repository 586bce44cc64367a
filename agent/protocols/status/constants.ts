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
/** gossipsub's own heartbeat (mesh maintenance, gossip of message ids): the spec's 1 s; a status topic needs no faster repair. */
export const GOSSIP_HEARTBEAT_INTERVAL_MS = 1000
/**
 * gossipsub's mesh degrees on a status topic. Each agent forwards a message
 * to its mesh peers (D, kept between Dlo and Dhi) and gossips message ids to
 * Dlazy others: constants, so what an agent sends per message does not
 * grow with its site, and every message still reaches a site of thousands
 * in a few hops.
 */
export const GOSSIP_MESH_DEGREE = 6
export const GOSSIP_MESH_DEGREE_LOW = 4
export const GOSSIP_MESH_DEGREE_HIGH = 10
export const GOSSIP_MESH_OUTBOUND_DEGREE = 2
export const GOSSIP_LAZY_DEGREE = 4
