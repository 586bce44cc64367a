import { EventEmitter } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ChunkCache } from '../../agent/cache.js'
import { CoordinatorUnreachableError } from '../../agent/errors.js'
import { MeshFetcher } from '../../agent/download/mesh-fetcher.js'
import type { ChunkOrigin, ChunkRequest, FetchOptions } from '../../agent/download/origin-source.js'
import { take } from '../../agent/download/token-bucket.js'
import { PeerNotConnectedError, type MeshNetwork, type MeshNetworkEvents } from '../../agent/p2p/network.js'
import { PieceStalledError, type PieceRequest, type RequestPieceOptions } from '../../agent/protocols/chunk/index.js'
import type { HaveMessage } from '../../agent/protocols/have/index.js'
import { HashMismatchError, packageIdOf, type ManifestPackage } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'

/** A package made of random chunks, with its manifest part. */
export function makePackage (chunkCount: number, chunkSizeBytes = 64 * 1024): { pkg: ManifestPackage, chunks: Map<string, Buffer> } {
  const chunks = new Map<string, Buffer>()
  const hashes: string[] = []
  const whole = createHash('sha256')
  for (let index = 0; index < chunkCount; index++) {
    const bytes = randomBytes(chunkSizeBytes)
    const sha256 = createHash('sha256').update(bytes).digest('hex')
    chunks.set(sha256, bytes)
    hashes.push(sha256)
    whole.update(bytes)
  }
  const list = { sizeBytes: chunkCount * chunkSizeBytes, chunkSizeBytes, sha256: whole.digest('hex'), chunks: hashes }
  const pkg: ManifestPackage = { id: packageIdOf(list), name: 'p', version: '1', platform: 'any', arch: 'any', kind: 'file', fileName: 'p.bin', ...list }
  return { pkg, chunks }
}

/** The origin, in memory, counting what it serves. */
export class StubOrigin implements ChunkOrigin {
  bytesServed = 0
  failuresLeft = 0
  /** Requests fail as if the WAN were cut. */
  unreachable = false
  /** Requests that failed because the origin was out of reach. */
  unreachableFailures = 0
  /** How long each request takes before its bytes come (a WAN's round trip and transfer). */
  latencyMs = 0
  constructor (private readonly chunks: Map<string, Buffer>) {}

  async fetchChunk (request: ChunkRequest, options: FetchOptions): Promise<Buffer> {
    await new Promise(resolve => setImmediate(resolve))
    options.signal.throwIfAborted()
    if (this.latencyMs > 0) await sleep(this.latencyMs, undefined, { signal: options.signal })
    if (this.unreachable) {
      this.unreachableFailures++
      throw new CoordinatorUnreachableError('cannot reach the coordinator: the link is down')
    }
    if (this.failuresLeft > 0) {
      this.failuresLeft--
      throw new HashMismatchError(request.sha256, '0'.repeat(64), `chunk ${request.index} from the origin`)
    }
    if (options.bucket !== undefined) await take(options.bucket, request.lengthBytes, options.signal)
    const bytes = this.chunks.get(request.sha256)!
    if (createHash('sha256').update(bytes).digest('hex') !== request.sha256) throw new HashMismatchError(request.sha256, 'other', 'chunk')
    this.bytesServed += bytes.byteLength
    return bytes
  }
}

/** Connects stub networks in memory: messages are delivered asynchronously and in order, pieces are read from the other side's fetcher. */
export class StubHub {
  readonly nodes = new Map<string, StubNetwork>()
  readonly links = new Set<string>()

  private key (a: string, b: string): string { return [a, b].sort().join('|') }

  linked (a: string, b: string): boolean { return this.links.has(this.key(a, b)) }

  connect (a: string, b: string): void {
    if (a === b || this.linked(a, b)) return
    this.links.add(this.key(a, b))
    this.nodes.get(a)!.emit('connected', b)
    this.nodes.get(b)!.emit('connected', a)
  }

  disconnect (a: string, b: string): void {
    if (!this.links.delete(this.key(a, b))) return
    this.nodes.get(a)?.emit('disconnected', b)
    this.nodes.get(b)?.emit('disconnected', a)
  }

  connectAll (): void {
    const ids = [...this.nodes.keys()]
    for (const a of ids) for (const b of ids) this.connect(a, b)
  }
}

export class StubNetwork extends EventEmitter<MeshNetworkEvents> implements MeshNetwork {
  fetcher?: MeshFetcher
  /** Alters what this node serves (a corrupt peer). */
  corrupt = false
  /** This node answers no piece requests (a stalled peer). */
  silent = false

  constructor (readonly selfId: string, private readonly hub: StubHub) {
    super()
    hub.nodes.set(selfId, this)
  }

  connectedPeers (): string[] {
    return [...this.hub.nodes.keys()].filter(id => this.hub.linked(this.selfId, id))
  }

  send (peer: string, message: HaveMessage): void {
    if (!this.hub.linked(this.selfId, peer)) return
    const copy = structuredClone(message)
    setImmediate(() => { if (this.hub.linked(this.selfId, peer)) this.hub.nodes.get(peer)?.emit('message', this.selfId, copy) })
  }

  async requestPiece (peer: string, request: PieceRequest, options: RequestPieceOptions): Promise<Uint8Array> {
    const remote = this.hub.nodes.get(peer)
    if (remote === undefined || !this.hub.linked(this.selfId, peer)) throw new PeerNotConnectedError(peer)
    await new Promise(resolve => setImmediate(resolve))
    if (remote.silent) {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => { reject(new PieceStalledError(200)) }, 200)
        options.signal.addEventListener('abort', () => { clearTimeout(timer); reject(options.signal.reason) }, { once: true })
      })
    }
    const bytes = Uint8Array.from(await remote.fetcher!.pieces.readPiece(request))
    if (remote.corrupt) bytes[0] ^= 0xff
    if (!this.hub.linked(this.selfId, peer)) throw new PeerNotConnectedError(peer)
    return bytes
  }

  async hangUp (peer: string): Promise<void> {
    this.hub.disconnect(this.selfId, peer)
  }
}

export interface StubSite {
  hub: StubHub
  origin: StubOrigin
  nodes: Array<{ id: string, network: StubNetwork, cache: ChunkCache, fetcher: MeshFetcher }>
  close: () => Promise<void>
}

/** A site of `count` agents wired through stub networks, each with its own cache on disk. */
export async function stubSite (count: number, chunks: Map<string, Buffer>, tuning: ConstructorParameters<typeof MeshFetcher>[0]['swarm'] = {}): Promise<StubSite> {
  const hub = new StubHub()
  const origin = new StubOrigin(chunks)
  const root = await mkdtemp(join(tmpdir(), 'md-mesh-stub-'))
  const nodes: StubSite['nodes'] = []
  for (let index = 0; index < count; index++) {
    const id = `peer-${index}`
    const network = new StubNetwork(id, hub)
    const cache = new ChunkCache({ root: join(root, id) })
    await cache.open()
    const fetcher = new MeshFetcher({ network, cache, origin, logger: silentLogger(), swarm: { picker: { gatherMs: 200, electionTimeoutMs: 1000 }, ...tuning } })
    network.fetcher = fetcher
    fetcher.start()
    nodes.push({ id, network, cache, fetcher })
  }
  return { hub, origin, nodes, close: async () => { await rm(root, { recursive: true, force: true }) } }
}
