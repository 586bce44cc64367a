import { KIB, MAX_CHUNKS_PER_PACKAGE } from '../../../protocol/index.js'

/** Which chunks of which packages a peer holds, wants, or is fetching from the origin. */
export const PROTOCOL = '/meshdeploy/have/2.0.0'

/** Largest message: a bitfield of the largest package, with its header. */
export const MAX_MESSAGE_BYTES = 1 + 32 + 4 + Math.ceil(MAX_CHUNKS_PER_PACKAGE / 8)
/** Bytes a reader buffers before it calls the peer too fast. */
export const MAX_BUFFER_BYTES = 2 * MAX_MESSAGE_BYTES + 64 * KIB
/** Messages waiting to be written to a slow peer before the channel is dropped. */
export const MAX_QUEUED_MESSAGES = 20_000
/** One announcement channel each way per connection. */
export const MAX_INBOUND_STREAMS = 2
export const MAX_OUTBOUND_STREAMS = 2
/**
 * How long `have`s wait to go out together: a peer hears of the chunks a
 * device stored in one message per interval, whatever their number, so the
 * end of a download (many chunks landing at once) is no announcement storm.
 */
export const DEFAULT_HAVE_BATCH_MS = 150
/** Opening the channel (protocol negotiation included). */
export const OPEN_TIMEOUT_MS = 10_000
/** A write that a peer does not take within this long drops the channel. */
export const WRITE_TIMEOUT_MS = 30_000
