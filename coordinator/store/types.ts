import type {
  SignedEnvelope, Action, Architecture, PackageKind, Platform, DetectionRule, DeviceTaskState, ExitOutcome, UninstallSpec,
  ManifestPublisherSignature, OverwritePolicy, RebootSpec
} from '../../protocol/index.js'

export interface PackageRecord {
  id: string
  name: string
  version: string
  description?: string
  publisher?: string
  platform: Platform
  arch: Architecture
  kind: PackageKind
  fileName: string
  sizeBytes: number
  sha256: string
  chunkSizeBytes: number
  chunks: string[]
  detection?: DetectionRule
  /** Exit code → outcome; overrides the defaults. */
  exitCodes?: Record<string, ExitOutcome>
  uninstall?: UninstallSpec
  /** Approved for self-service: devices may request it. */
  selfService?: boolean
  /** The publisher's signature over sha256, checked at upload. */
  publisherSignature?: ManifestPublisherSignature
  createdAt: string
  createdBy: string
  updatedAt?: string
  updatedBy?: string
}

export interface TaskTargets {
  deviceIds?: string[]
  groups?: string[]
  sites?: string[]
  /** Devices used by these people (user ids). */
  users?: string[]
  /** Devices used by people of these departments (or their sub-departments, `Sales/EMEA` under `Sales`). */
  departments?: string[]
  /** Devices used by people with these roles. */
  roles?: string[]
  all?: boolean
}

/** active: dispatching within its window; paused: releases no device; cancelled, deleted: over. */
export type TaskStatus = 'active' | 'paused' | 'cancelled' | 'deleted'

export interface TaskRecord {
  id: string
  name: string
  packageId: string
  action: Action
  targets: TaskTargets
  runArgs: string[]
  bandwidthKBps?: number
  destination?: string
  entry?: string
  fileMode?: string
  overwrite?: OverwritePolicy
  timeoutSeconds: number
  maxAttempts: number
  retryDelaySeconds: number
  /** Devices released per minute at most; absent: all at once. */
  devicesPerMinute?: number
  deferWhileVpn: boolean
  reboot: RebootSpec
  revision: number
  /** Re-runs for failed devices so far. */
  rerun: number
  status: TaskStatus
  createdAt: string
  updatedAt: string
  createdBy: string
  /** When devices start being released. */
  startAt: string
  validUntil: string
  pausedAt?: string
  endedAt?: string
  endedBy?: string
  /** The self-service request this task fulfils. */
  requestId?: string
  manifest: SignedEnvelope
}

/**
 * The single source of truth of whether a device belongs to the fleet: only
 * an `active` device authenticates, is targeted, and is on the peer allow-list.
 * `blocked` can be undone; `retired` is permanent.
 */
export type DeviceStatus = 'active' | 'blocked' | 'retired'

export const DEVICE_STATUSES: readonly DeviceStatus[] = ['active', 'blocked', 'retired']
/** A device the scheduler let start a task. */
export interface ReleaseRecord {
  taskId: string
  deviceId: string
  releasedAt: number
}

/** A person who uses devices, imported from the organisation's directory. */
export interface UserRecord {
  id: string
  displayName?: string
  email?: string
  /** A path such as `Sales/EMEA`; a target department matches its sub-departments. */
  department?: string
  role?: string
  /** Devices the person uses, by device id or host name. */
  devices: string[]
  updatedAt: string
}

/** A registered publisher key for security verification. */
export interface PublisherRecord {
  keyId: string
  name: string
  /** ed25519 public key, hex. */
  publicKey: string
  addedAt: string
  addedBy: string
}

export type RequestStatus = 'pending' | 'approved' | 'denied'

/** A self-service request of a device (or a user on it) for a package. */
export interface RequestRecord {
  id: string
  packageId: string
  packageName: string
  packageVersion: string
  deviceId: string
  hostname: string
  user?: string
  reason?: string
  /** `device` when the agent asked, otherwise the operator who asked on a user's behalf. */
  requestedBy: string
  status: RequestStatus
  createdAt: string
  decidedAt?: string
  /** The operator, or `auto-approve`. */
  decidedBy?: string
  comment?: string
  taskId?: string
}


/**
 * Where a device's site came from: named at enrollment (by the agent or its
 * enrollment token) and kept; or worked out from the first boundary that
 * contains its address, and worked out again when it roams.
 */
export type SiteSource = 'declared' | 'boundary' | 'default'

export interface DeviceRecord {
  id: string
  hostname: string
  publicKey: string
  peerId: string
  platform: Platform
  arch: Architecture
  site: string
  /** Absent on devices enrolled before boundaries existed: their site counts as declared. */
  siteSource?: SiteSource
  groups: string[]
  status: DeviceStatus
  /** When, by whom and why the status last changed (block, unblock, retire). */
  statusChangedAt?: string
  statusChangedBy?: string
  statusReason?: string
  enrolledAt: string
  lastSeenAt?: string
  lastAddress?: string
  agentVersion?: string
  /** The agent's libp2p addresses, as it reports them; handed to its site peers. */
  peerAddresses?: string[]
  /** The agent runs as its site's cache (distribution point): it prefetches the site's packages. */
  siteCache?: boolean
  /** The operator's latest request that the device clear its cache; ids only grow. */
  clearCacheRequest?: { id: number, requestedAt: string, requestedBy: string }
  /** The latest clear-cache request the device carried out. */
  cacheClearedRequest?: number
}

/** A named site (SCCM's boundary group): devices of one site share content with each other. */
export interface SiteRecord {
  name: string
  description?: string
  createdAt: string
  createdBy: string
}

/** An address range that places devices in a site. */
export interface BoundaryRecord {
  id: string
  /** IPv4 or IPv6 CIDR, canonical form. */
  cidr: string
  site: string
  description?: string
  createdAt: string
  createdBy: string
}

/** One device's latest state in one task. */
export interface DeviceTaskRow {
  taskId: string
  deviceId: string
  state: DeviceTaskState
  revision: number
  attempt: number
  seq: number
  bytesTotal: number
  bytesDone: number
  bytesFromPeers: number
  bytesFromOrigin: number
  exitCode?: number | null
  message?: string
  retryAt?: number
  final?: boolean
  /** When the device issued the record. */
  reportedAt: string
  /** When the coordinator stored it. */
  updatedAt: string
}

/** A status record as stored, with the signed bytes it came from. */
export interface StatusLogEntry {
  key: string
  receivedAt: string
  viaDeviceId: string
  envelope: SignedEnvelope
}

export type OperatorRole = 'admin' | 'operator' | 'viewer'

export interface OperatorToken {
  id: string
  name: string
  role: OperatorRole
  /** SHA-256 of the secret, hex. */
  hash: string
  createdAt: string
  /** Who created it (the bootstrap token: `bootstrap`). */
  createdBy?: string
  expiresAt?: string
  revokedAt?: string
  revokedBy?: string
}

export interface EnrollmentToken {
  id: string
  hash: string
  createdAt: string
  expiresAt?: string
  maxUses?: number
  uses: number
  site?: string
  groups?: string[]
  createdBy: string
  revokedAt?: string
}

/** One operator change, as the audit log keeps it. */
export interface AuditEntry {
  id: string
  /** ISO time the change was answered. */
  at: string
  /** The operator token's name. */
  actor: string
  tokenId: string
  role: OperatorRole
  method: string
  /** The request path as sent, and the route it matched. */
  path: string
  route: string
  /** Ids the change concerned: path parameters and the id of what it created. */
  targetIds: string[]
  /** The request's fields, secrets removed and long values cut. */
  summary: Record<string, unknown>
  status: number
  /** The client's address as the coordinator saw it. */
  address: string
  userAgent?: string
}

export type OperatorEventType = 'status' | 'task' | 'device'

/** A change operators can follow live (GET /v1/events). */
export interface OperatorEvent {
  /** Grows by one with every event, across restarts. */
  id: number
  type: OperatorEventType
  at: string
  /** Set on events that concern one task (the stream's filter). */
  taskId?: string
  data: Record<string, unknown>
}

/** SHA-256 of a device credential, hex → device id. */
export interface CredentialRecord {
  deviceId: string
  createdAt: string
}

export interface Collections {
  packages: PackageRecord
  tasks: TaskRecord
  devices: DeviceRecord
  deviceTasks: DeviceTaskRow
  statusLog: StatusLogEntry
  operatorTokens: OperatorToken
  enrollmentTokens: EnrollmentToken
  credentials: CredentialRecord
  audit: AuditEntry
  releases: ReleaseRecord
  users: UserRecord
  publishers: PublisherRecord
  requests: RequestRecord
  sites: SiteRecord
  boundaries: BoundaryRecord
  meta: unknown
  /** The operators' event journal: a bounded ring keyed by the zero-padded event id. */
  events: OperatorEvent
}

export type CollectionName = keyof Collections

export type WriteOperation =
  { [K in CollectionName]: { type: 'put', collection: K, key: string, value: Collections[K] } | { type: 'del', collection: K, key: string } }[CollectionName]

export interface RangeOptions {
  /** Only keys that start with this prefix. */
  prefix?: string
  limit?: number
  /** Start after this key (for paging). */
  after?: string
  /** Only keys at or above this one. */
  gte?: string
  /** Only keys below this one. */
  lt?: string
  reverse?: boolean
}

export interface Collection<T> {
  get (key: string): Promise<T | undefined>
  getMany (keys: string[]): Promise<Array<T | undefined>>
  entries (options?: RangeOptions): AsyncGenerator<[string, T]>
  values (options?: RangeOptions): AsyncGenerator<T>
}

/**
 * The coordinator's storage. Every write goes through `write`, which applies
 * its operations atomically and durably (flushed to disk) before resolving:
 * the API answers 2xx only after it.
 */
export interface Store {
  readonly collections: { [K in CollectionName]: Collection<Collections[K]> }
  write (operations: WriteOperation[]): Promise<void>
  close (): Promise<void>
}

/** The key of a device-task row and of its status log prefix. */
export function deviceTaskKey (taskId: string, deviceId: string): string {
  return `${taskId}!${deviceId}`
}
