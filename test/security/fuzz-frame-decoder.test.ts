/**
 * The place for property-based fuzzing of the libp2p wire frame decoder
 * (length-prefixed chunk-protocol frames): arbitrary bytes, truncated frames,
 * a length prefix claiming gigabytes, frames longer than declared. It is
 * filled in when the mesh's frame decoder lands; the properties are the same
 * as for the envelope decoder in fuzz.test.ts — named errors only, a bounded
 * read whatever the prefix claims.
 */
import test from 'ava'

test.todo('frame decoder: arbitrary bytes throw only named errors')
test.todo('frame decoder: a length prefix over the maximum frame size is refused before any allocation')
test.todo('frame decoder: a truncated frame is refused; a frame with trailing bytes is refused')
