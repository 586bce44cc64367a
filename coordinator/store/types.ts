import type {
  SignedEnvelope, Action, Architecture, PackageKind, Platform, DetectionRule, DeviceTaskState, ExitOutcome, UninstallSpec,
  ManifestPublisherSignature, OverwritePolicy, RebootSpec, SupersedeMode, CaptureSummary
} from '../../protocol/index.js'
import type { PhaseSpec, RolloutState } from '../tasks/phases.js'
import type { CredentialRecord as PushCredentialRecord } from '../credentials/types.js'
import type { PinnedHostKey, PushHostRecord, PushInstallRecord } from '../push/types.js'
import type { ChangeFeed } from './changes.js'

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
  /** Packages installed before this one where missing: by id, or by name with a minimum version (the newest that fits). */
  dependsOn?: Array<{ packageId: string } | { name: string, minVersion?: string }>
  /** Older packages this one takes the place of: installed over (upgrade) or removed first (replace). */
  supersedes?: Array<{ packageId: string, mode: SupersedeMode }>
  /** A capture package: what it changes, read from the package at upload. */
  capture?: CaptureSummary
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
  /** Devices that reported one of these packages installed (the packages a superseding package takes the place of). */
  installedPackages?: string[]
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
  /** respect: install and reboot only inside the devices' maintenance windows; absent: ignore (tasks made before windows existed). */
  maintenanceWindows?: 'respect' | 'ignore'
  /** A phased rollout: ordered rings, each released once the one before it succeeded. */
  phases?: PhaseSpec[]
  /** Where the phased rollout stands. */
  rollout?: RolloutState
  /** The task was halted (automatically by a ring's failures, or by an operator); it is paused meanwhile. */
  halted?: { at: string, reason: string, by: string }
  /** Packages the task deployed before it was switched to a superseding one, oldest first. */
  switchedFrom?: Array<{ packageId: string, at: string, by: string, revision: number }>
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
/**
 * Devices the scheduler let start a task at one moment: one record per
 * release, not per device (a task for a whole fleet releases 100,000 devices
 * in one write). Long lists are split over several records.
 */
export interface ReleaseRecord {
  taskId: string
  releasedAt: number
  deviceIds: string[]
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
  /**
   * The device is its site's cache (distribution point): it is handed the
   * site's packages to prefetch, and the origin serves it their chunks. Only
   * an operator grants it (`siteCacheGrantedBy`).
   */
  siteCache?: boolean
  siteCacheGrantedAt?: string
  siteCacheGrantedBy?: string
  /** The agent runs with --site-cache: it offers the role, which an operator may grant. */
  siteCacheOffered?: boolean
  /** The operator's latest request that the device clear its cache; ids only grow. */
  clearCacheRequest?: { id: number, requestedAt: string, requestedBy: string }
  /** The latest clear-cache request the device carried out. */
  cacheClearedRequest?: number
  /**
   * The device's credential was seen in use by two agents at once (a copied
   * agent.json, a stolen credential): when first and last, how many sessions
   * and from where. Cleared by an operator (or by blocking the device).
   */
  sharedCredential?: SharedCredentialFlag
}

export interface SharedCredentialFlag {
  detectedAt: string
  lastDetectedAt: string
  /** Live sessions at the last detection. */
  sessions: number
  /** Their addresses, most recent first. */
  addresses: string[]
  /** What showed it: `sessions-taking-turns` (two agent sessions alternating), `conflicting-status-records` (two different records signed under one sequence number). */
  evidence: string[]
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

/** A maintenance window: when devices of its sites, groups or its devices may install and reboot. */
export interface MaintenanceWindowRecord {
  id: string
  name: string
  description?: string
  /** The devices it applies to: of these sites, in these groups, or these devices (ids or host names). */
  sites?: string[]
  groups?: string[]
  deviceIds?: string[]
  /** Recurring: the days of the week it opens on. */
  days?: Array<'sun' | 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat'>
  /** One-off: the date it opens on, YYYY-MM-DD. */
  date?: string
  /** HH:MM in its zone. */
  start: string
  durationMinutes: number
  /** IANA zone; absent: each device's own. */
  timeZone?: string
  createdAt: string
  createdBy: string
  updatedAt: string
  updatedBy: string
}

/** A package a device reported installed (by its detection rule), for the tasks of packages that supersede it. */
export interface InstallationRecord {
  packageId: string
  deviceId: string
  at: string
  /** The task whose record said so. */
  taskId: string
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
  /** waiting-for-window: when the next maintenance window that fits opens, ms. */
  windowAt?: number
  /** A phased rollout: the ring the row is counted under in the task's progress counters. */
  ring?: number
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
  /** The device this token enrolled last (a one-time token's device). */
  lastDeviceId?: string
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
  maintenanceWindows: MaintenanceWindowRecord
  installations: InstallationRecord
  meta: unknown
  /** The operators' event journal: a bounded ring keyed by the zero-padded event id. */
  events: OperatorEvent
  /** Accounts and SSH keys push installs log in with, secrets sealed; keyed by id. */
  pushCredentials: PushCredentialRecord
  /** Push installs (agentless installs over SSH), keyed by id. */
  pushInstalls: PushInstallRecord
  /** One host of one run of a push install, keyed `<push id>!<run, 6 digits>!<host index, 6 digits>`. */
  pushHosts: PushHostRecord
  /** SSH host keys pinned at first contact, keyed `<host>:<port>`. */
  hostKeys: PinnedHostKey
}

export type CollectionName = keyof Collections

export type WriteOperation =
  | { [K in CollectionName]: { type: 'put', collection: K, key: string, value: Collections[K] } | { type: 'del', collection: K, key: string } }[CollectionName]
  | CounterOperation

/**
 * Adds `delta` to a counter (absent counters count from 0), atomically with
 * the rest of the write. Counters carry what is maintained incrementally
 * rather than counted by a scan: per-device answer versions, task progress,
 * enrollment token uses.
 */
export interface CounterOperation {
  type: 'add'
  counter: string
  delta: number
}

/** What a durable write reports back. */
export interface WriteResult {
  /** Each counter the write added to, with its value after the write. */
  counters: Map<string, number>
}

/** A range of a scan (start-up loading, small collections); request paths use `page` and its cursors. */
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

/** Items a page holds when the caller does not say. */
export const DEFAULT_PAGE_LIMIT = 500
/** Items a page holds at most, whatever the caller asks. */
export const MAX_PAGE_LIMIT = 5000

export interface PageOptions {
  /** Items at most; bounded by MAX_PAGE_LIMIT. @default DEFAULT_PAGE_LIMIT */
  limit?: number
  /** Where the previous page ended (its `cursor`); absent: from the start. */
  cursor?: string
  /** Only keys that start with this prefix (primary keys, or the keys listed under an index term). */
  prefix?: string
  /** Only the items an index lists under one term, in key order. */
  index?: { name: string, term: string }
  /** Keys only: values are not read. @default false */
  keysOnly?: boolean
}

export interface PageItem<T> {
  key: string
  /** Absent with `keysOnly`. */
  value: T
}

export interface Page<T> {
  items: Array<PageItem<T>>
  /** Present when more items may follow: pass it back as `cursor`. Opaque. */
  cursor?: string
}

/** A cursor that this store did not issue, or issued for another listing. */
export class InvalidCursorError extends Error {
  constructor (message = 'the cursor is not one this listing issued') {
    super(message)
    this.name = 'InvalidCursorError'
  }
}

/** An index name the collection does not declare. */
export class UnknownIndexError extends Error {
  constructor (collection: string, index: string) {
    super(`collection ${collection} has no index ${index}`)
    this.name = 'UnknownIndexError'
  }
}

export interface Collection<T> {
  get (key: string): Promise<T | undefined>
  getMany (keys: string[]): Promise<Array<T | undefined>>
  /** One page of items in key order, by primary key or through an index term; follow `cursor` for the next. */
  page (options?: PageOptions): Promise<Page<T>>
  /** How many items an index lists under a term; only for indexes declared `counted`. */
  count (index: { name: string, term: string }): Promise<number>
  /** Every item in key order, read page by page (start-up loading, small collections). */
  entries (options?: RangeOptions): AsyncGenerator<[string, T]>
  values (options?: RangeOptions): AsyncGenerator<T>
}

/** The counters of a store: read here, changed by `add` operations in a write. */
export interface Counters {
  get (counter: string): Promise<number>
  getMany (counters: string[]): Promise<number[]>
  /** Counters whose names start with `prefix`, in name order. */
  page (options: { prefix: string, limit?: number, cursor?: string }): Promise<Page<number>>
}

/**
 * The coordinator's storage. Every write goes through `write`, which applies
 * its operations atomically and durably (flushed to disk) before resolving:
 * the API answers 2xx only after it. The store keeps the declared indexes
 * (STORE_INDEXES) in step with every write, in the same atomic write.
 */
export interface Store {
  readonly collections: { [K in CollectionName]: Collection<Collections[K]> }
  readonly counters: Counters
  write (operations: WriteOperation[]): Promise<WriteResult>
  close (): Promise<void>
  /**
   * Present on a store several coordinators share: the keys the others
   * change, as they commit them (ids only), for what is kept in memory and
   * for held requests to wake.
   */
  readonly changes?: ChangeFeed
  /**
   * Present on a store several coordinators share: takes the next `count`
   * numbers of a counter and writes what `build` makes of them, in one
   * atomic write. Writes numbered by one counter commit in number order,
   * whichever coordinator makes them, so a reader that has seen number n
   * has seen every number below it. Resolves with the first number.
   */
  appendNumbered? (counter: string, count: number, build: (first: number) => WriteOperation[]): Promise<number>
}

/**
 * A secondary index: the terms an item is listed under. An item is found
 * under each of its terms; a change of the item moves it between terms in
 * the same write. Terms are computed here, the same way for every backend.
 */
export interface IndexDefinition<T> {
  terms: (value: T) => readonly string[]
  /** The store keeps how many items each term lists (`Collection.count`). @default false */
  counted?: boolean
}

function unique (values: readonly string[]): string[] {
  return [...new Set(values)]
}

/** A department and every department above it, lower-cased: `Sales/EMEA` → `sales`, `sales/emea`. */
export function departmentTerms (department: string | undefined): string[] {
  if (department === undefined || department === '') return []
  const parts = department.toLowerCase().split('/').filter(part => part !== '')
  return parts.map((_, index) => parts.slice(0, index + 1).join('/'))
}

/** The index terms of a task's targets: `all`, `site:NAME`, `group:NAME`, `device:ID-OR-HOSTNAME`, `user:ID`, `department:PATH`, `role:NAME`. */
export function targetTerms (targets: TaskTargets): string[] {
  const terms: string[] = []
  if (targets.all === true) terms.push('all')
  for (const site of targets.sites ?? []) terms.push(`site:${site}`)
  for (const group of targets.groups ?? []) terms.push(`group:${group}`)
  for (const device of targets.deviceIds ?? []) terms.push(`device:${device.toLowerCase()}`)
  for (const user of targets.users ?? []) terms.push(`user:${user.toLowerCase()}`)
  for (const department of targets.departments ?? []) terms.push(`department:${departmentTerms(department).at(-1) ?? ''}`)
  for (const role of targets.roles ?? []) terms.push(`role:${role.toLowerCase()}`)
  return unique(terms)
}

/**
 * The indexes every backend keeps. Target resolution, device listings and
 * enrollment's key check go through them instead of scanning a collection.
 */
export const STORE_INDEXES: { [K in CollectionName]?: Record<string, IndexDefinition<Collections[K]>> } = {
  devices: {
    site: { terms: device => [device.site], counted: true },
    group: { terms: device => unique(device.groups), counted: true },
    status: { terms: device => [device.status], counted: true },
    hostname: { terms: device => [device.hostname.toLowerCase()] },
    publicKey: { terms: device => [device.publicKey] }
  },
  users: {
    /** Each department from the top down to the user's own. */
    department: { terms: user => departmentTerms(user.department) },
    role: { terms: user => user.role !== undefined ? [user.role.toLowerCase()] : [] },
    /** The devices (ids or host names, lower-cased) the user works on. */
    device: { terms: user => unique(user.devices.map(device => device.toLowerCase())) }
  },
  tasks: {
    target: { terms: task => targetTerms(task.targets) },
    status: { terms: task => [task.status], counted: true }
  }
}

/** The key of a device-task row and of its status log prefix. */
export function deviceTaskKey (taskId: string, deviceId: string): string {
  return `${taskId}!${deviceId}`
}
