import { createHash, randomBytes } from 'node:crypto'
import { open, writeFile } from 'node:fs/promises'
import type { AbortOptions, ConnectionProtector, MessageStream, MultiaddrConnection } from '@libp2p/interface'
import { preSharedKey } from '@libp2p/pnet'
import { byteStream } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { MeshdeployError } from '../../protocol/errors.js'

/**
 * The private network of an organisation's agents: a pre-shared key (the
 * "swarm key" format of libp2p and IPFS) that encrypts every connection
 * beneath noise, so a machine without the key cannot even start a handshake.
 * It comes on top of the allow-list gater, not instead of it: the key is
 * shared by every device and cannot be revoked for one of them.
 */

const SWARM_KEY_HEADER = '/key/swarm/psk/1.0.0/'
const SWARM_KEY_ENCODING = '/base16/'
export const SWARM_KEY_BYTES = 32
/** Bytes of a swarm key file at most: a key file is about 95 bytes. */
export const MAX_SWARM_KEY_FILE_BYTES = 4096
/** How long the nonce exchange and the first bytes of a connection may take when libp2p gives no signal. @default 10 s */
export const DEFAULT_PROTECT_TIMEOUT_MS = 10_000
/**
 * What the dialer sends first on every connection once it is protected: the
 * multistream-select header that negotiates the encryption. A listener that
 * decrypts anything else holds another key (or none).
 */
const MULTISTREAM_HEADER = Uint8Array.from([19, ...Buffer.from('/multistream/1.0.0\n')])

/** Whether the bytes so far (at most a header's worth or more) start as the multistream header does. */
function isHeaderPrefix (bytes: Uint8ArrayList): boolean {
  const length = Math.min(bytes.byteLength, MULTISTREAM_HEADER.byteLength)
  return Buffer.from(bytes.subarray(0, length)).equals(MULTISTREAM_HEADER.subarray(0, length))
}

/** A swarm key file that is not `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits. */
export class InvalidSwarmKeyError extends MeshdeployError {
  constructor (message: string) {
    super(message, 'invalid-swarm-key')
    this.name = 'InvalidSwarmKeyError'
  }
}

/** A peer dialed in with another pre-shared key, or none. */
export class PreSharedKeyMismatchError extends MeshdeployError {
  readonly address: string
  constructor (address: string, detail: string, options?: ErrorOptions) {
    super(`the connection from ${address} is not protected by this network's pre-shared key: ${detail}`, 'swarm-key-mismatch', options)
    this.name = 'PreSharedKeyMismatchError'
    this.address = address
  }
}

/** Checks a swarm key file and returns it in the canonical form libp2p reads. */
export function parseSwarmKey (file: Uint8Array | string): Uint8Array {
  const text = typeof file === 'string' ? file : Buffer.from(file).toString('utf8')
  if (text.length > MAX_SWARM_KEY_FILE_BYTES) throw new InvalidSwarmKeyError(`a swarm key file is about 95 bytes, not ${text.length}`)
  const lines = text.split(/\r?\n/).map(line => line.trim())
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop()
  if (lines.length !== 3 || lines[0] !== SWARM_KEY_HEADER) throw new InvalidSwarmKeyError(`a swarm key has three lines: ${SWARM_KEY_HEADER}, ${SWARM_KEY_ENCODING} and the key in hex`)
  if (lines[1] !== SWARM_KEY_ENCODING) throw new InvalidSwarmKeyError(`only ${SWARM_KEY_ENCODING} swarm keys are supported, not ${lines[1].slice(0, 40)}`)
  if (!/^[0-9a-fA-F]{64}$/.test(lines[2])) throw new InvalidSwarmKeyError(`the key is ${SWARM_KEY_BYTES * 2} hex digits`)
  return Buffer.from(formatSwarmKey(Buffer.from(lines[2], 'hex')))
}

/** Reads and checks a swarm key file (bounded: a key file is tiny). */
export async function readSwarmKeyFile (path: string): Promise<Uint8Array> {
  const handle = await open(path, 'r')
  try {
    const buffer = Buffer.alloc(MAX_SWARM_KEY_FILE_BYTES + 1)
    const { bytesRead } = await handle.read(buffer, 0, buffer.byteLength, 0)
    if (bytesRead > MAX_SWARM_KEY_FILE_BYTES) throw new InvalidSwarmKeyError(`${path} is larger than a swarm key file`)
    return parseSwarmKey(buffer.subarray(0, bytesRead))
  } finally {
    await handle.close()
  }
}

/** Writes a new swarm key file, readable by its owner only; never over an existing file. */
export async function writeNewSwarmKeyFile (path: string): Promise<string> {
  const text = generateSwarmKey()
  await writeFile(path, text, { mode: 0o600, flag: 'wx' })
  return swarmKeyIdOf(Buffer.from(text))
}

/** A new random swarm key, as the file's text. */
export function generateSwarmKey (): string {
  return formatSwarmKey(randomBytes(SWARM_KEY_BYTES))
}

function formatSwarmKey (key: Uint8Array): string {
  return `${SWARM_KEY_HEADER}\n${SWARM_KEY_ENCODING}\n${Buffer.from(key).toString('hex')}\n`
}

/** A short fingerprint of the key for logs: two devices with the same fingerprint hold the same key. */
export function swarmKeyIdOf (swarmKey: Uint8Array): string {
  return createHash('sha256').update(parseSwarmKey(swarmKey)).digest('hex').slice(0, 16)
}

export interface PrivateNetworkInit {
  /** The swarm key file's content. */
  swarmKey: Uint8Array
  /** A connection refused for another key, with its remote address (the caller logs it). */
  onMismatch?: (error: PreSharedKeyMismatchError) => void
  /** @default DEFAULT_PROTECT_TIMEOUT_MS */
  timeoutMs?: number
}

/**
 * The libp2p connection protector: @libp2p/pnet, plus a check of the first
 * bytes an inbound connection decrypts. With another key they are noise, and
 * pnet alone would hand them to the encryption negotiation, which may wait
 * for a newline until the upgrade times out; here the connection is refused
 * at once, by name, and reported.
 */
export function privateNetwork (init: PrivateNetworkInit): () => ConnectionProtector {
  const psk = parseSwarmKey(init.swarmKey)
  const timeoutMs = init.timeoutMs ?? DEFAULT_PROTECT_TIMEOUT_MS
  const inner = preSharedKey({ psk, timeout: timeoutMs })
  return () => {
    const protector = inner()
    return {
      async protect (connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
        const signal = options?.signal ?? AbortSignal.timeout(timeoutMs)
        if (connection.direction !== 'inbound') return await protector.protect(connection as MultiaddrConnection, { ...options, signal })
        const address = (connection as Partial<MultiaddrConnection>).remoteAddr?.toString() ?? 'an unknown address'
        let protectedConnection: MessageStream | undefined
        const first = new Uint8ArrayList()
        try {
          protectedConnection = await protector.protect(connection as MultiaddrConnection, { ...options, signal })
          const bytes = byteStream(protectedConnection)
          try {
            // Byte by byte as they come: a peer without the key is refused at its first wrong byte, not after a timeout.
            while (first.byteLength < MULTISTREAM_HEADER.byteLength && isHeaderPrefix(first)) {
              const more = await bytes.read({ signal })
              if (more === null) throw new Error('the connection ended')
              first.append(more)
            }
          } finally {
            bytes.unwrap()
          }
        } catch (error) {
          // A peer holding the key sends its nonce and the header at once: silence or an early end means it does not.
          throw refuse(new PreSharedKeyMismatchError(address, `no protected handshake (${(error as Error).message})`, { cause: error }))
        }
        if (!isHeaderPrefix(first)) throw refuse(new PreSharedKeyMismatchError(address, 'its first bytes do not decrypt'))
        // The negotiation that follows reads the header itself.
        protectedConnection.unshift(first)
        return protectedConnection

        function refuse (error: PreSharedKeyMismatchError): PreSharedKeyMismatchError {
          (protectedConnection ?? connection).abort(error)
          init.onMismatch?.(error)
          return error
        }
      }
    }
  }
}
