import { KIB, MIB } from '../../../protocol/index.js'

/** A piece of a chunk (package, chunk index, byte offset, length) asked of a peer. */
export const PROTOCOL = '/meshdeploy/chunk/1.0.0'

/** A request is a fixed 44 bytes; anything longer is refused. */
export const REQUEST_BYTES = 32 + 4 + 4 + 4
/** Largest piece one request may ask for; larger chunks are asked for in pieces. */
export const MAX_PIECE_BYTES = 1 * MIB
/** The answer's bytes travel in frames of at most this size (smaller when the sender is capped). */
export const MAX_DATA_FRAME_BYTES = 256 * KIB
/** Answer header: a status byte and the length that follows. */
export const HEADER_BYTES = 1 + 4
/** Requests a peer may have open on one connection; more are reset by libp2p. */
export const MAX_INBOUND_STREAMS = 32
export const MAX_OUTBOUND_STREAMS = 32
/** Uploads this agent serves at once over all connections; more are answered `busy`. */
export const DEFAULT_MAX_CONCURRENT_UPLOADS = 48
/** A requester must send its request within this long. */
export const REQUEST_READ_TIMEOUT_MS = 10_000
/** Opening a request stream (protocol negotiation included). */
export const OPEN_TIMEOUT_MS = 10_000
/** Longest an answer may go without making progress before the request counts as stalled. */
export const IDLE_TIMEOUT_MS = 15_000
/**
 * Progress, for the stall timer: this many bytes (or the rest of the piece).
 * A peer dribbling a byte now and then does not keep a request alive.
 */
export const MIN_PROGRESS_BYTES = 8 * KIB
/** A sender that cannot write a frame within this long gives the request up. */
export const WRITE_TIMEOUT_MS = 30_000
/**
 * Piece requests one peer may make per second, sustained, and at once after a
 * quiet spell: an honest downloader of the smallest chunks (64 KiB) at about
 * 1 Gbit/s from one peer stays under it.
 */
export const DEFAULT_REQUESTS_PER_SECOND = 2000
export const DEFAULT_REQUEST_BURST = 2000
/** Refusals for its rate after which a peer is disconnected, counted over ABUSE_WINDOW_MS. */
export const DEFAULT_REFUSALS_BEFORE_DISCONNECT = 100
export const ABUSE_WINDOW_MS = 10_000
/** Shortest wait a `rate-limited` answer asks for: a requester that honours it stays well under the disconnect threshold. */
export const MIN_RETRY_AFTER_MS = 1000
/** Longest wait an answer may ask for; anything longer is malformed. */
export const MAX_RETRY_AFTER_MS = 10 * 60_000
/** How long a peer disconnected for abuse is refused by the gater. */
export const DEFAULT_ABUSE_SUSPENSION_MS = 60_000
