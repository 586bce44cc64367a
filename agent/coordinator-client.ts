import http from 'node:http'
import https from 'node:https'
import {
  AGENT_SESSION_HEADER, InsecureTransportError, randomId, PROBLEM_CONTENT_TYPE, TooLargeError, TimeoutError, createHttpsAgent, trustFailureOf,
  type Problem, type SignedEnvelope, type TlsTrust
} from '../protocol/index.js'
import { CoordinatorError, CoordinatorUnreachableError } from './errors.js'
import { Reachability } from './reachability.js'

export interface EnrollRequest {
  token: string
  publicKey: string
  hostname: string
  platform: string
  arch: string
  site?: string
  groups?: string[]
  agentVersion?: string
}

export interface EnrollAnswer {
  deviceId: string
  credential: string
  peerId: string
  site: string
  groups: string[]
  coordinatorPublicKey: string
  coordinatorKeyId: string
  /** Key rotations that led to the key; absent from coordinators that never rotated. */
  coordinatorKeySequence?: number
  /** The device's first certificate, presented to its site peers (later ones come with assignments answers). */
  certificate?: SignedEnvelope
}

export interface AssignmentAnswer {
  etag: string
  device: { id: string, site: string, groups: string[] }
  /** `mode: 'finish'`: the task is paused or deleted; finish what is under way, start nothing. */
  assignments: Array<{ taskId: string, revision: number, manifest: SignedEnvelope, mode?: 'finish' }>
  /** The site's other devices and their libp2p addresses. */
  peers?: Array<{ deviceId: string, peerId: string, addresses: string[], siteCache?: boolean }>
  /** Active devices of the site, this one included. */
  siteDevices?: number
  /** This device's certificate, signed by the coordinator: presented to every peer it connects to. Verified by the peers. */
  certificate?: SignedEnvelope
  /** Devices whose certificates no longer count. */
  revokedDeviceIds?: string[]
  /** For a site cache: tasks of its site to fetch ahead. */
  prefetch?: Array<{ taskId: string, revision: number, manifest: SignedEnvelope }>
  /** A clear-cache request not carried out yet. */
  clearCacheRequest?: number
  pollIntervalSeconds: number
  /** Over how many seconds agents spread their return after losing the coordinator (it grows with the fleet). */
  reconnectSpreadSeconds?: number
  coordinatorKey?: { keyId: string, sequence: number }
  /** Key rotation statements, oldest first; verified by the agent before use. */
  keyRotations?: unknown[]
  /** The gossip topic of the device's site (status records, relay election). */
  statusTopic?: string
  /** The device's maintenance windows, signed by the coordinator; verified before use. */
  maintenanceWindows?: unknown
}

/** What the agent tells the coordinator about itself. */
export interface SelfReport {
  peerAddresses: string[]
  siteCache: boolean
  connectedPeers: number
  cache: { usedBytes: number, limitBytes: number, pinnedBytes: number, packages: number }
  clearedCacheRequest?: number
  /** Whether this agent is its site's status relay now. */
  statusRelay?: boolean
}

export interface StatusAnswer {
  acknowledged: string[]
  rejected: Array<{ index: number, reason: string, message: string }>
  duplicates: number
  /** The coordinator's signed receipt, when asked for (a relay passes it on to its site). */
  receipt?: SignedEnvelope
}

/** A self-service package as the catalog lists it. */
export interface CatalogPackage {
  id: string
  name: string
  version: string
  description?: string
  publisher?: string
  platform: string
  arch: string
  kind: string
  sizeBytes: number
}

/** A self-service request of this device. */
export interface DeviceRequestAnswer {
  id: string
  packageId: string
  packageName: string
  packageVersion: string
  status: 'pending' | 'approved' | 'denied'
  createdAt: string
  decidedAt?: string
  decidedBy?: string
  comment?: string
  taskId?: string
}

export interface CoordinatorClientInit {
  url: string
  credential?: string
  /** @default 30000 */
  requestTimeoutMs?: number
  /** Bound on a JSON answer. @default 64 MiB (manifests of very large packages) */
  maxJsonBytes?: number
  /** How the coordinator's HTTPS certificate is trusted: a CA, a pinned fingerprint, or the system's CAs. */
  tls?: TlsTrust
  /** Accept an http:// URL. @default false */
  allowInsecureHttp?: boolean
  /** Names this client's requests, so that the coordinator tells two agents with one credential apart. @default a random id */
  sessionId?: string
}

export interface RequestOptions {
  signal?: AbortSignal
  timeoutMs?: number
}

const DEFAULT_REQUEST_TIMEOUT_MS = 30_000
const DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024

interface Answer {
  status: number
  body: Buffer
  contentType: string | undefined
  retryAfter?: string
}

/** Every exchange of the agent with the coordinator goes through here. */
export class CoordinatorClient {
  readonly baseUrl: URL
  /** Whether the last exchange reached the coordinator. */
  readonly reachability = new Reachability()
  private credential?: string
  private readonly requestTimeoutMs: number
  private readonly maxJsonBytes: number
  /** Sent with every request (AGENT_SESSION_HEADER): one agent, one session. */
  readonly sessionId: string
  private readonly agent: http.Agent

  constructor (init: CoordinatorClientInit) {
    this.baseUrl = new URL(init.url)
    if (this.baseUrl.protocol === 'http:' && init.allowInsecureHttp !== true) throw new InsecureTransportError(init.url, '--insecure-http')
    if (this.baseUrl.protocol !== 'http:' && this.baseUrl.protocol !== 'https:') throw new TypeError(`${init.url} is not an http(s) URL`)
    if (init.credential !== undefined) this.credential = init.credential
    this.requestTimeoutMs = init.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
    this.maxJsonBytes = init.maxJsonBytes ?? DEFAULT_MAX_JSON_BYTES
    this.sessionId = init.sessionId ?? randomId('ses')
    this.agent = this.baseUrl.protocol === 'https:'
      ? createHttpsAgent(init.tls ?? {}, { keepAlive: true, maxSockets: 16 })
      : new http.Agent({ keepAlive: true, maxSockets: 16 })
  }

  setCredential (credential: string): void {
    this.credential = credential
  }

  close (): void {
    this.agent.destroy()
  }

  async enroll (request: EnrollRequest, options: RequestOptions = {}): Promise<EnrollAnswer> {
    return await this.json<EnrollAnswer>('POST', '/v1/agents/enroll', request, { ...options, anonymous: true })
  }

  async assignments (etag: string | undefined, waitSeconds: number, options: RequestOptions = {}): Promise<AssignmentAnswer> {
    const query = new URLSearchParams({ waitSeconds: String(waitSeconds) })
    if (etag !== undefined) query.set('etag', etag)
    return await this.json<AssignmentAnswer>('GET', `/v1/agents/assignments?${query.toString()}`, undefined, { ...options, timeoutMs: options.timeoutMs ?? (waitSeconds * 1000 + this.requestTimeoutMs) })
  }

  async reportSelf (report: SelfReport, options: RequestOptions = {}): Promise<void> {
    const answer = await this.request('PUT', '/v1/agents/self', report, { ...options, maxBytes: this.maxJsonBytes })
    if (answer.status < 200 || answer.status >= 300) throw this.errorOf(answer)
  }

  /** Sends status records (this device's, or as the site's relay its site's, with `receipt: true`). */
  async postStatus (records: SignedEnvelope[], options: RequestOptions & { receipt?: boolean } = {}): Promise<StatusAnswer> {
    const { receipt, ...rest } = options
    return await this.json<StatusAnswer>('POST', '/v1/agents/status', receipt === true ? { records, receipt } : { records }, rest)
  }

  /** The self-service packages this device may request. */
  async catalog (options: RequestOptions = {}): Promise<CatalogPackage[]> {
    return (await this.json<{ packages: CatalogPackage[] }>('GET', '/v1/agents/catalog', undefined, options)).packages
  }

  /** Requests a self-service package (by id, id prefix or name) for this device. */
  async requestPackage (request: { package: string, user?: string, reason?: string }, options: RequestOptions = {}): Promise<DeviceRequestAnswer> {
    return await this.json<DeviceRequestAnswer>('POST', '/v1/agents/requests', request, options)
  }

  /** This device's requests, newest first. */
  async requests (options: RequestOptions = {}): Promise<DeviceRequestAnswer[]> {
    return (await this.json<{ requests: DeviceRequestAnswer[] }>('GET', '/v1/agents/requests', undefined, options)).requests
  }

  /**
   * Fetches content bytes from the origin, optionally a byte range. The answer
   * may not be longer than `maxBytes`; `onData` sees each piece as it arrives
   * (for pacing and progress) and may return a promise to hold the stream.
   * With `into` (at least `maxBytes` long) the bytes are written there as they
   * arrive, and the answer is the view of it they fill: no buffer per answer.
   */
  async fetchContent (sha256: string, range: { start: number, end: number } | undefined, maxBytes: number, options: RequestOptions & { onData?: (bytes: number) => Promise<void> | void, into?: Uint8Array } = {}): Promise<Buffer> {
    const headers: Record<string, string> = {}
    if (range !== undefined) headers.range = `bytes=${range.start}-${range.end - 1}`
    if (options.into !== undefined && options.into.byteLength < maxBytes) throw new RangeError(`the target holds ${options.into.byteLength} bytes, fewer than the ${maxBytes} allowed`)
    const answer = await this.request('GET', `/v1/content/${sha256}`, undefined, { ...options, headers, maxBytes })
    if (answer.status !== 200 && answer.status !== 206) throw this.errorOf(answer)
    return answer.body
  }

  private async json<T> (method: string, path: string, payload: unknown, options: RequestOptions & { anonymous?: boolean }): Promise<T> {
    const answer = await this.request(method, path, payload, { ...options, maxBytes: this.maxJsonBytes })
    if (answer.status < 200 || answer.status >= 300) throw this.errorOf(answer)
    try {
      return JSON.parse(answer.body.toString('utf8')) as T
    } catch {
      throw new CoordinatorError(answer.status, 'malformed-answer', `the coordinator's answer to ${method} ${path} is not JSON`)
    }
  }

  private errorOf ({ status, body, contentType, retryAfter }: Answer): CoordinatorError {
    let reason = 'http-error'
    let message = `HTTP ${status}`
    if (contentType?.startsWith(PROBLEM_CONTENT_TYPE) === true) {
      try {
        const problem = JSON.parse(body.toString('utf8')) as Problem
        reason = problem.reason
        message = problem.detail ?? problem.title
      } catch {}
    }
    // Retry-After in seconds (429, 503): the agent waits that long before it asks again.
    const retryAfterSeconds = Number(retryAfter)
    return new CoordinatorError(status, reason, message, retryAfter !== undefined && Number.isFinite(retryAfterSeconds) && retryAfterSeconds >= 0 ? Math.min(retryAfterSeconds, 3600) * 1000 : undefined)
  }

  private async request (method: string, path: string, payload: unknown, options: RequestOptions & { headers?: Record<string, string>, maxBytes: number, anonymous?: boolean, onData?: (bytes: number) => Promise<void> | void, into?: Uint8Array }): Promise<Answer> {
    const url = new URL(path, this.baseUrl)
    const signals = [AbortSignal.timeout(options.timeoutMs ?? this.requestTimeoutMs)]
    if (options.signal !== undefined) signals.push(options.signal)
    const signal = AbortSignal.any(signals)
    const headers: Record<string, string> = { accept: 'application/json', [AGENT_SESSION_HEADER]: this.sessionId, ...options.headers }
    let data: Buffer | undefined
    if (payload !== undefined) {
      data = Buffer.from(JSON.stringify(payload))
      headers['content-type'] = 'application/json'
      headers['content-length'] = String(data.byteLength)
    }
    if (options.anonymous !== true && this.credential !== undefined) headers.authorization = `Bearer ${this.credential}`
    const transport = url.protocol === 'https:' ? https : http
    return await new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(abortReason(signal, method, url))
        return
      }
      const request = transport.request(url, { method, headers, agent: this.agent, signal }, response => {
        const parts: Buffer[] = []
        let received = 0
        // A success answer goes straight into the caller's buffer; anything else (a problem document) is collected.
        const status = response.statusCode ?? 0
        const into = options.into !== undefined && status >= 200 && status < 300 ? options.into : undefined
        response.on('data', (piece: Buffer) => {
          if (received + piece.byteLength > options.maxBytes) {
            received += piece.byteLength
            response.destroy(new TooLargeError(`answer to ${method} ${url.pathname}`, options.maxBytes))
            return
          }
          if (into !== undefined) into.set(piece, received)
          else parts.push(piece)
          received += piece.byteLength
          const held = options.onData?.(piece.byteLength)
          if (held instanceof Promise) {
            response.pause()
            held.then(() => response.resume(), error => response.destroy(error))
          }
        })
        response.on('end', () => {
          this.reachability.succeeded()
          const retryAfter = response.headers['retry-after']
          const body = into !== undefined ? Buffer.from(into.buffer, into.byteOffset, received) : parts.length === 1 ? parts[0] : Buffer.concat(parts)
          resolve({ status: response.statusCode ?? 0, body, contentType: response.headers['content-type'], ...(retryAfter !== undefined ? { retryAfter } : {}) })
        })
        response.on('error', error => {
          if (options.signal?.aborted !== true && !(error instanceof TooLargeError)) this.reachability.failed()
          reject(signal.aborted ? abortReason(signal, method, url) : error)
        })
        response.on('aborted', () => {
          this.reachability.failed()
          reject(new CoordinatorUnreachableError(`the coordinator closed the answer to ${method} ${url.pathname}`))
        })
      })
      request.on('error', error => {
        const untrusted = trustFailureOf(error)
        // The agent's own abort (it stops) says nothing about the path; a timeout or a failed connection does.
        if (!signal.aborted || options.signal?.aborted !== true) this.reachability.failed()
        if (signal.aborted) reject(abortReason(signal, method, url))
        else if (untrusted !== undefined) reject(untrusted)
        else if (error instanceof TooLargeError) reject(error)
        else reject(new CoordinatorUnreachableError(`cannot reach the coordinator at ${url.origin}: ${error.message}`, { cause: error }))
      })
      request.end(data)
    })
  }
}

function abortReason (signal: AbortSignal, method: string, url: URL): Error {
  const reason = signal.reason as Error | undefined
  if (reason?.name === 'TimeoutError') return new TimeoutError(`${method} ${url.pathname} timed out`)
  return reason ?? new Error('aborted')
}
