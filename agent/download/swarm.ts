import { createHash } from 'node:crypto'
import { chunkLengthOf, describeError, HashMismatchError, type ManifestPackage } from '../../protocol/index.js'
import type { Logger } from '../../protocol/logger.js'
import type { ChunkCache } from '../cache.js'
import { ChunkUnavailableError } from '../errors.js'
import type { MeshNetwork } from '../p2p/network.js'
import { MAX_PIECE_BYTES, MalformedPieceMessageError, PieceRefusedError, PieceStalledError } from '../protocols/chunk/index.js'
import { FrameTooLargeError, TruncatedFrameError } from '../protocols/frames.js'
import { RefusalLog } from '../refusals.js'
import type { HaveMessage } from '../protocols/have/index.js'
import type { DownloadProgress } from './downloader.js'
import type { ChunkOrigin } from './origin-source.js'
import { PiecePicker, type PickedRequest, type PiecePickerInit } from './picker.js'
import { fetchPacedRanges } from './paced-ranges.js'
import type { TokenBucket } from './token-bucket.js'

/** Origin attempts per chunk before the download fails. */
export const DEFAULT_ORIGIN_ATTEMPTS = 3
/** Pause before the origin is asked again for a chunk that failed. */
export const ORIGIN_RETRY_PAUSE_MS = 250
/** Bad chunks from one peer after which it is banned for the rest of the download (the first disconnects it). */
export const DEFAULT_BAD_CHUNKS_BEFORE_BAN = 2

/** What a peer said about this package before or while it downloads. */
export interface RemoteView {
  bits?: Uint8Array
  chunkCount?: number
  interested: boolean
  fetching: Map<number, number>
}

export interface SwarmInit {
  pkg: ManifestPackage
  network: MeshNetwork
  cache: ChunkCache
  origin: ChunkOrigin
  logger: Logger
  /** Where bad chunks and the peers that sent them are logged. @default a refusal log on `logger` */
  refusals?: RefusalLog
  /** Caps the device's download across every source. */
  bucket?: TokenBucket
  /** Tuning of the picker and the election. */
  picker?: Partial<Omit<PiecePickerInit, 'chunkCount' | 'packageId' | 'self' | 'now' | 'random' | 'held'>>
  /** @default DEFAULT_ORIGIN_ATTEMPTS */
  originAttempts?: number
  /** @default DEFAULT_BAD_CHUNKS_BEFORE_BAN */
  badChunksBeforeBan?: number
  /** Peers that are interested in the package, to tell of new chunks. */
  interestedPeers: () => Iterable<string>
  /** Bans a peer for as long as this download runs. */
  ban: (peer: string) => void
  onProgress?: (progress: DownloadProgress) => void
  now?: () => number
  random?: () => number
  signal: AbortSignal
}

/** An answer that no honest peer sends: cut short, longer than announced, a frame over its bound, an unknown header. */
function isProtocolViolation (error: unknown): boolean {
  return error instanceof MalformedPieceMessageError || error instanceof FrameTooLargeError || error instanceof TruncatedFrameError
}

interface Running {
  request: PickedRequest
  controller: AbortController
}

/**
 * One package's download through the mesh: it feeds what peers announce to
 * the picker, carries out the picker's requests (peers piece by piece,
 * origin by byte range; the bucket paces both), checks every chunk's hash
 * before it is stored or announced, and tells its peers.
 */
export class Swarm {
  readonly pkg: ManifestPackage
  private readonly init: SwarmInit
  private readonly network: MeshNetwork
  private readonly picker: PiecePicker
  private readonly progress: DownloadProgress
  private readonly running = new Map<number, Running>()
  private readonly originFailures = new Map<number, { count: number, last: unknown }>()
  private readonly badChunks = new Map<string, number>()
  /** Peers that, since this download began, said whether they download the package (`interested`) or what they hold (`bitfield`). */
  private readonly answered = new Set<string>()
  private readonly now: () => number
  private readonly refusals: RefusalLog
  private wakeUp?: () => void
  private fatal?: Error
  private readonly pieceBytes: number

  constructor (init: SwarmInit) {
    this.init = init
    this.pkg = init.pkg
    this.network = init.network
    this.now = init.now ?? Date.now
    this.refusals = init.refusals ?? new RefusalLog({ logger: init.logger })
    const held: number[] = []
    let heldBytes = 0
    for (const [index, sha256] of init.pkg.chunks.entries()) {
      if (!init.cache.has(sha256)) continue
      held.push(index)
      heldBytes += chunkLengthOf(init.pkg, index)
    }
    this.picker = new PiecePicker({
      ...init.picker,
      chunkCount: init.pkg.chunks.length,
      packageId: init.pkg.id,
      self: init.network.selfId,
      held,
      now: this.now,
      random: init.random ?? Math.random,
      gatherEndsBy: 'caller'
    })
    this.progress = {
      bytesTotal: init.pkg.sizeBytes,
      bytesDone: heldBytes,
      chunksTotal: init.pkg.chunks.length,
      chunksDone: held.length,
      bytesFromPeers: 0,
      bytesFromOrigin: 0
    }
    // Capped, a piece is no larger than the bucket's burst so that the bytes on the wire follow the cap.
    this.pieceBytes = Math.min(MAX_PIECE_BYTES, init.bucket?.pieceBytes ?? MAX_PIECE_BYTES)
  }

  get bitfield (): Uint8Array {
    const bits = new Uint8Array(Math.ceil(this.pkg.chunks.length / 8))
    for (let index = 0; index < this.pkg.chunks.length; index++) if (this.picker.isHeld(index)) bits[index >> 3] |= 0x80 >> (index & 7)
    return bits
  }

  /**
   * Tells a peer where this download stands: what it holds (as `interested`
   * when it introduces itself, as `bitfield` when it answers the peer's
   * interest) and the chunks it is fetching from the origin, so that a peer
   * that joins late neither fetches those again nor waits for chunks whose
   * `have` it missed.
   */
  tellState (peer: string, type: 'interested' | 'bitfield'): void {
    this.network.send(peer, { type, packageId: this.pkg.id, chunkCount: this.pkg.chunks.length, bits: this.bitfield })
    for (const { request } of this.running.values()) {
      if (request.source.kind === 'origin') this.network.send(peer, { type: 'fetching', packageId: this.pkg.id, index: request.index })
    }
  }

  get complete (): boolean {
    return this.picker.complete
  }

  isBanned (peer: string): boolean {
    return this.picker.isBanned(peer)
  }

  /** What a peer had said before the download began. */
  seed (peer: string, view: RemoteView): void {
    // Not an answer yet: `have`s sent before this device was interested never reached it, so the bits may be stale.
    if (view.bits !== undefined && view.chunkCount === this.pkg.chunks.length) this.picker.peerBitfield(peer, view.bits)
    if (view.interested) this.picker.peerInterested(peer, true)
    for (const [index] of view.fetching) this.picker.peerFetching(peer, index)
  }

  onMessage (peer: string, message: HaveMessage): void {
    switch (message.type) {
      case 'interested':
      case 'bitfield':
        if (message.chunkCount !== this.pkg.chunks.length) return
        this.picker.peerBitfield(peer, message.bits, message.type === 'interested' ? true : undefined)
        this.answered.add(peer)
        this.checkGather()
        break
      case 'have':
        this.picker.peerHave(peer, message.index)
        break
      case 'fetching': {
        const yielded = this.picker.peerFetching(peer, message.index)
        if (yielded !== undefined) this.running.get(yielded.id)?.controller.abort(new Error(`peer ${peer} fetches chunk ${message.index} from the origin too`))
        break
      }
      case 'not-interested':
        this.picker.peerInterested(peer, false)
        break
    }
    this.kick()
  }

  onPeerLeft (peer: string): void {
    this.picker.peerLeft(peer)
    this.answered.delete(peer)
    this.checkGather()
    this.kick()
  }

  /**
   * The gather before origin fetches lets every downloader of the site make
   * itself known, so that all elect alike. It ends early once every
   * connected peer has answered this device's interest (downloaders say
   * `interested`, the others answer with their `bitfield`): waiting longer
   * would only leave the WAN idle.
   */
  private checkGather (): void {
    if (!this.picker.gathering) return
    const peers = this.network.connectedPeers()
    if (peers.length === 0) return
    if (peers.every(peer => this.answered.has(peer) || this.picker.isBanned(peer))) this.picker.endGather()
  }

  private kick (): void {
    const wake = this.wakeUp
    this.wakeUp = undefined
    wake?.()
  }

  /** Runs until every chunk is held, the download fails, or the signal aborts. */
  async run (): Promise<DownloadProgress> {
    const { signal } = this.init
    const onAbort = (): void => { this.kick() }
    signal.addEventListener('abort', onAbort)
    this.init.onProgress?.({ ...this.progress })
    this.checkGather()
    try {
      while (!this.picker.complete) {
        signal.throwIfAborted()
        if (this.fatal !== undefined) throw this.fatal
        for (const request of this.picker.next()) this.start(request)
        if (this.picker.complete) break
        await this.idle()
      }
      if (this.fatal !== undefined) throw this.fatal
      return { ...this.progress }
    } finally {
      signal.removeEventListener('abort', onAbort)
      for (const running of this.running.values()) running.controller.abort(new Error('the download ended'))
    }
  }

  /** Waits for anything that may change the picker's mind: an event, a request's end, or its timer. */
  private async idle (): Promise<void> {
    const wakeAt = this.picker.wakeAt()
    await new Promise<void>(resolve => {
      let timer: NodeJS.Timeout | undefined
      this.wakeUp = () => {
        if (timer !== undefined) clearTimeout(timer)
        resolve()
      }
      // A deadline is acted on in the turn after its timer: messages that arrived while the process was held up
      // (a stall longer than the gather) are read first, and the picker decides from them, not from before.
      if (wakeAt !== undefined) {
        timer = setTimeout(() => {
          setImmediate(() => {
            this.picker.expireGather()
            this.kick()
          })
        }, Math.max(0, wakeAt - this.now()))
      }
      if (this.init.signal.aborted) this.kick()
    })
  }

  private start (request: PickedRequest): void {
    const controller = new AbortController()
    this.running.set(request.id, { request, controller })
    const signal = AbortSignal.any([this.init.signal, controller.signal])
    const work = request.source.kind === 'peer'
      ? this.fromPeer(request, request.source.peer, signal)
      : this.fromOrigin(request, signal)
    void work.finally(() => {
      this.running.delete(request.id)
      this.kick()
    })
  }

  private async fromPeer (request: PickedRequest, peer: string, signal: AbortSignal): Promise<void> {
    const lengthBytes = chunkLengthOf(this.pkg, request.index)
    const sha256 = this.pkg.chunks[request.index]
    // The chunk's pieces land in one pooled buffer, owned by the cache once stored, back in the pool otherwise.
    const bytes = this.init.cache.buffers.acquire(lengthBytes)
    let owned = true
    try {
      try {
        await fetchPacedRanges({ lengthBytes, maxRangeBytes: this.pieceBytes, ...(this.init.bucket !== undefined ? { bucket: this.init.bucket } : {}), signal }, async (start, end, onBytes) => {
          const target = bytes.subarray(start, end)
          const received = await this.network.requestPiece(peer, { packageId: this.pkg.id, index: request.index, offsetBytes: start, lengthBytes: end - start }, onBytes !== undefined ? { signal, into: target, onBytes } : { signal, into: target })
          // A network that does not honour `into` returns bytes of its own.
          if (received.buffer !== target.buffer || received.byteOffset !== target.byteOffset) {
            if (received.byteLength !== end - start) throw new MalformedPieceMessageError(`asked for ${end - start} bytes, received ${received.byteLength}`)
            target.set(received)
          }
        })
      } catch (error) {
        if (signal.aborted) {
          this.picker.failed(request.id, 'cancelled')
          return
        }
        if (isProtocolViolation(error)) {
          this.picker.failed(request.id, 'bad-data')
          await this.badChunk(peer, request.index, { reason: 'malformed-answer', message: `an answer that breaks the chunk protocol (${describeError(error)})` })
          return
        }
        if (error instanceof PieceRefusedError && (error.status === 'busy' || error.status === 'rate-limited')) {
          this.picker.failed(request.id, 'busy', error.retryAfterMs ?? 0)
          return
        }
        if (error instanceof PieceStalledError) {
          this.refusals.refuse({ subject: 'chunk', reason: 'stalled', peer, packageId: this.pkg.id, index: request.index, message: `${error.message}; the chunk is asked elsewhere` }, 'info')
        } else {
          this.init.logger.debug({ peer, index: request.index, err: describeError(error) }, 'a peer request failed')
        }
        this.picker.failed(request.id, error instanceof PieceRefusedError && error.status === 'not-cached' ? 'not-cached' : 'error')
        return
      }
      const actual = createHash('sha256').update(bytes).digest('hex')
      if (actual !== sha256) {
        this.picker.failed(request.id, 'bad-data')
        await this.badChunk(peer, request.index, { reason: 'hash-mismatch', message: `chunk ${request.index} fails its hash`, actual })
        return
      }
      owned = false
      if (!await this.store(request, bytes, signal, 'peer', true)) return
      this.report()
    } finally {
      if (owned) this.init.cache.buffers.release(bytes)
    }
  }

  /**
   * A chunk that fails its hash, or an answer that breaks the protocol: the
   * peer is disconnected, and banned after repeats. Nothing of it was stored.
   */
  private async badChunk (peer: string, index: number, cause: { reason: 'hash-mismatch' | 'malformed-answer', message: string, actual?: string }): Promise<void> {
    const count = (this.badChunks.get(peer) ?? 0) + 1
    this.badChunks.set(peer, count)
    const banned = count >= (this.init.badChunksBeforeBan ?? DEFAULT_BAD_CHUNKS_BEFORE_BAN)
    this.refusals.refuse({
      subject: 'chunk',
      reason: cause.reason,
      peer,
      packageId: this.pkg.id,
      index,
      message: `${cause.message}; ${banned ? 'peer banned for the rest of the download' : 'disconnecting the peer'}`,
      details: { expected: this.pkg.chunks[index], ...(cause.actual !== undefined ? { actual: cause.actual } : {}), badChunks: count, banned }
    })
    if (banned) {
      this.refusals.refuse({ subject: 'peer', reason: 'peer-banned', peer, packageId: this.pkg.id, message: `peer banned for the rest of the download after ${count} bad answers` })
      this.picker.ban(peer)
      this.init.ban(peer)
    } else {
      this.picker.peerLeft(peer)
    }
    await this.network.hangUp(peer)
  }

  private async fromOrigin (request: PickedRequest, signal: AbortSignal): Promise<void> {
    const index = request.index
    // Others wait for this chunk rather than fetch it too.
    for (const peer of this.network.connectedPeers()) this.network.send(peer, { type: 'fetching', packageId: this.pkg.id, index })
    let bytes: Buffer
    try {
      bytes = await this.init.origin.fetchChunk(
        { index, sha256: this.pkg.chunks[index], lengthBytes: chunkLengthOf(this.pkg, index) },
        this.init.bucket !== undefined ? { signal, bucket: this.init.bucket, buffers: this.init.cache.buffers } : { signal, buffers: this.init.cache.buffers }
      )
    } catch (error) {
      if (signal.aborted) {
        this.picker.failed(request.id, 'cancelled')
        return
      }
      const failures = this.originFailures.get(index) ?? { count: 0, last: undefined }
      failures.count++
      failures.last = error
      this.originFailures.set(index, failures)
      const attempts = this.init.originAttempts ?? DEFAULT_ORIGIN_ATTEMPTS
      // An origin out of reach (a site cut off from the coordinator) fails nothing while site peers hold the chunk: the picker takes it from them.
      if (failures.count >= attempts && !this.picker.heldByPeers(index)) {
        const reason = error instanceof HashMismatchError
          ? `chunk ${index} failed its hash check ${attempts} times (${describeError(error)})`
          : `chunk ${index} could not be fetched: ${describeError(error)}`
        this.fatal ??= new ChunkUnavailableError(index, reason, { cause: error })
      }
      this.picker.failed(request.id, 'error', ORIGIN_RETRY_PAUSE_MS * failures.count)
      return
    }
    if (!await this.store(request, bytes, signal, 'origin', true)) return
    this.report()
  }

  /**
   * Stores a chunk its caller verified (a pooled buffer's ownership passes to
   * the cache, or back to the pool), counts it to its source, settles the
   * picker and tells interested peers. The counts change together with the
   * picker: once the picker is complete, the download's end may be seen
   * before this function's caller runs again.
   */
  private async store (request: PickedRequest, bytes: Uint8Array, signal: AbortSignal, source: 'peer' | 'origin', pooled = false): Promise<boolean> {
    if (this.picker.isHeld(request.index)) {
      this.picker.failed(request.id, 'cancelled')
      if (pooled) this.init.cache.buffers.release(bytes)
      return false
    }
    try {
      await this.init.cache.put(bytes, this.pkg.chunks[request.index], { hashedByCaller: true, pooled })
    } catch (error) {
      this.picker.failed(request.id, 'cancelled')
      if (!signal.aborted) this.fatal ??= error as Error
      return false
    }
    // An endgame copy may have landed while this one was written.
    if (this.picker.isHeld(request.index)) {
      this.picker.failed(request.id, 'cancelled')
      return false
    }
    this.progress.bytesDone += bytes.byteLength
    if (source === 'peer') this.progress.bytesFromPeers += bytes.byteLength
    else this.progress.bytesFromOrigin += bytes.byteLength
    this.progress.chunksDone++
    for (const other of this.picker.completed(request.id)) this.running.get(other.id)?.controller.abort(new Error('fetched from another source'))
    for (const peer of this.init.interestedPeers()) this.network.send(peer, { type: 'have', packageId: this.pkg.id, index: request.index })
    return true
  }

  private report (): void {
    this.init.onProgress?.({ ...this.progress })
  }
}
