import { ContentStore } from '../protocol/index.js'

/**
 * The agent's chunk cache: content-addressed, written atomically, every read
 * checked against its hash. Writes are not flushed one by one: a chunk that
 * a crash damaged fails its hash check on the next read and is fetched again.
 */
export class ChunkCache {
  readonly content: ContentStore

  constructor (root: string) {
    this.content = new ContentStore(root)
  }

  async open (): Promise<void> {
    await this.content.open()
  }

  async has (sha256: string): Promise<boolean> {
    return await this.content.has(sha256)
  }

  /** Stores a chunk whose hash the caller has already checked against the manifest. */
  async put (bytes: Uint8Array, sha256: string): Promise<void> {
    await this.content.put(bytes, sha256, { sync: false })
  }

  async get (sha256: string): Promise<Buffer> {
    return await this.content.get(sha256)
  }
}
