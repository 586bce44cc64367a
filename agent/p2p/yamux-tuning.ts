import { YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/** Largest noise message (65,535 bytes) less its 16-byte tag: what one encryption carries. */
const NOISE_PAYLOAD_BYTES = 65_535 - 16
/** A yamux frame's header. */
const YAMUX_HEADER_BYTES = 12
/**
 * Data bytes per yamux frame such that a frame and its header fill exactly
 * one noise message. With yamux's default of 64 KiB, every frame spills 29
 * bytes into a second noise message: twice the encryptions, the length
 * prefixes and the socket writes for the same bytes.
 */
export const YAMUX_MESSAGE_BYTES = NOISE_PAYLOAD_BYTES - YAMUX_HEADER_BYTES

/** The fields of a yamux stream the window rule below reads. */
interface WindowState {
  state: number
  recvWindow: number
  recvWindowCapacity: number
}

/** yamux's `StreamState.Established`. */
const ESTABLISHED = 3

let installed = false

/**
 * Sends a stream's window update only once half of its receive window is
 * used, as the reference (Go) yamux does, instead of after every data frame:
 * the sender, holding a window of a whole piece, never waits for it, and
 * the receiver no longer answers each 64 KiB with a frame of its own (one
 * more encryption and socket write each). Updates that carry flags (opening
 * and acknowledging a stream) and those of a paused stream go as before.
 */
export function installHalfWindowUpdates (): void {
  if (installed) return
  installed = true
  const prototype = YamuxStream.prototype as unknown as { sendWindowUpdate: (this: WindowState) => void }
  const send = prototype.sendWindowUpdate
  prototype.sendWindowUpdate = function (this: WindowState): void {
    if (this.state === ESTABLISHED && this.recvWindowCapacity >= this.recvWindow / 2) return
    send.call(this)
  }
}
