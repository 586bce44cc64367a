import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import type { Logger } from '../../protocol/logger.js'
import type { CredentialService } from '../credentials/service.js'
import { ApiError, ConflictError, NotFoundError, ValidationError } from '../errors.js'
import type { PackageService } from '../packages/service.js'
import type { Store, WriteOperation } from '../store/types.js'
import { readAgentPackages } from './agent-packages.js'
import { HostEntryError, hostKeyId, parseHostEntry, DEFAULT_SSH_PORT } from './hosts.js'
import { normalizeHostKeyFingerprint, type HostKeyBook } from './host-keys.js'
import type { CoordinatorEndpoint, HostInstaller } from './installer.js'
import { PUSHABLE_KINDS } from './posix.js'
import { PushRun, STOPPING } from './runner.js'
import type { PushTransport } from './transport.js'
import { PUSH_HOST_STATES, type PushCounts, type PushHostRecord, type PushHostState, type PushInstallRecord, type PushInstallSpec } from './types.js'

export const MAX_PUSH_HOSTS = 1000
export const MAX_PUSH_CREDENTIALS = 10
export const DEFAULT_PUSH_CONCURRENCY = 8
export const MAX_PUSH_CONCURRENCY = 32
export const DEFAULT_MAX_ATTEMPTS = 3
export const DEFAULT_RETRY_DELAY_SECONDS = 60
export const DEFAULT_CONNECT_TIMEOUT_SECONDS = 20
export const DEFAULT_COMMAND_TIMEOUT_SECONDS = 900
export const DEFAULT_ENROLL_TIMEOUT_SECONDS = 120
/** Push runs at once; more wait in the queue. */
export const DEFAULT_RUNNING_PUSHES = 2
/** Runs waiting for a slot; past it, a new run is refused with 503 and Retry-After. */
export const DEFAULT_QUEUED_PUSHES = 50
export const DEFAULT_PUSH_PAGE = 100
export const MAX_PUSH_PAGE = 1000

const FINAL_STATES: ReadonlySet<PushHostState> = new Set(['succeeded', 'failed', 'cancelled'])

const absolutePath = z.string().min(2).max(1024).regex(/^\/[^\0]*$/, 'an absolute path').refine(path => !path.split('/').includes('..'), 'no .. in the path')

const rebootSchema = z.object({
  /** never; always (after a successful install, with shutdown's warning). `ask` needs an agent to ask the user and is refused. */
  policy: z.enum(['never', 'always', 'ask']),
  message: z.string().max(200).optional(),
  /** Seconds until the reboot, rounded up to minutes. @default 60 */
  delaySeconds: z.number().int().min(0).max(7 * 24 * 3600).optional()
}).strict()

export const createPushSchema = z.object({
  /** @default "Installation of <agent or package>" */
  name: z.string().trim().min(1).max(200).optional(),
  /** Host names or addresses (not enrolled devices), each optionally with :port. */
  hosts: z.array(z.string().trim().min(1).max(300)).min(1).max(MAX_PUSH_HOSTS),
  /** Credential ids, tried in this order on each host. */
  credentials: z.array(z.string().min(1).max(100)).min(1).max(MAX_PUSH_CREDENTIALS),
  /** `agent`, or a package whose installer runs without an agent. */
  install: z.union([z.literal('agent'), z.object({ packageId: z.string().min(1).max(200), runArgs: z.array(z.string().max(1000)).max(100).optional() }).strict()]),
  /** For install: agent. */
  agent: z.object({
    site: z.string().trim().min(1).max(100).optional(),
    groups: z.array(z.string().trim().min(1).max(100)).max(100).optional(),
    /** @default the coordinator's public URL */
    coordinatorUrl: z.url().optional(),
    /** Unpack and start the agent under this folder instead of installing the system package. */
    installPrefix: absolutePath.optional(),
    enrollTimeoutSeconds: z.number().int().min(10).max(3600).optional()
  }).strict().optional(),
  maxAttempts: z.number().int().min(1).max(10).optional(),
  retryDelaySeconds: z.number().int().min(0).max(24 * 3600).optional(),
  reboot: z.union([z.enum(['never', 'always', 'ask']), rebootSchema]).optional(),
  port: z.number().int().min(1).max(65535).optional(),
  /** Host (as listed) → SHA-256 fingerprint of its SSH host key (SHA256:…, as ssh-keygen -l prints it). */
  hostKeyFingerprints: z.record(z.string().max(300), z.string().max(100)).optional(),
  concurrency: z.number().int().min(1).max(MAX_PUSH_CONCURRENCY).optional(),
  connectTimeoutSeconds: z.number().int().min(1).max(300).optional(),
  commandTimeoutSeconds: z.number().int().min(10).max(4 * 3600).optional(),
  /** false: save it to start later (POST /v1/push-installs/:id/runs). @default true */
  start: z.boolean().optional()
}).strict()

export type CreatePushRequest = z.infer<typeof createPushSchema>

export const rerunPushSchema = z.object({
  /** unfinished: the hosts of the last run that did not succeed; all: every host. @default unfinished */
  hosts: z.enum(['unfinished', 'all']).optional()
}).strict()

export const pushListQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(MAX_PUSH_PAGE).optional(),
  cursor: z.string().min(1).max(100).optional()
}).strict()

export const pushHostsQuerySchema = z.object({
  /** @default the latest */
  run: z.coerce.number().int().min(1).optional(),
  state: z.enum(PUSH_HOST_STATES as [PushHostState, ...PushHostState[]]).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_PUSH_PAGE).optional(),
  cursor: z.string().regex(/^\d{6}$/).optional()
}).strict()

/** Too many push runs wait already. */
export class PushQueueFullError extends ApiError {
  constructor (queued: number, retryAfterSeconds: number) {
    super(503, 'push-queue-full', `${queued} push runs are waiting already; try again later`, { headers: { 'retry-after': String(retryAfterSeconds) } })
    this.name = 'PushQueueFullError'
  }
}

function emptyCounts (): PushCounts {
  return Object.fromEntries(PUSH_HOST_STATES.map(state => [state, 0])) as PushCounts
}

function hostKey (pushId: string, run: number, index: number): string {
  return `${pushId}!${String(run).padStart(6, '0')}!${String(index).padStart(6, '0')}`
}

/** What a list shows of a push: everything but its host list, which can be long. */
export type PushSummary = Omit<PushInstallRecord, 'hosts'> & { hostCount: number }

function summary (record: PushInstallRecord): PushSummary {
  const { hosts, ...rest } = record
  return { ...rest, hostCount: hosts.length }
}

export interface PushServiceInit {
  store: Store
  credentials: CredentialService
  packages: PackageService
  hostKeys: HostKeyBook
  installer: HostInstaller
  transport: PushTransport
  agentPackagesDir: string
  logger: Logger
  /** @default DEFAULT_RUNNING_PUSHES */
  runningPushes?: number
  /** @default DEFAULT_QUEUED_PUSHES */
  queuedPushes?: number
  now?: () => number
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>
}

interface ActiveRun {
  record: PushInstallRecord
  states: Map<number, PushHostState>
  controller: AbortController
  /** Writes of this run one at a time, so that the counts stay exact. */
  writes: Promise<unknown>
}

/**
 * Push installs: saved tasks that install the agent, or a package, on
 * hosts without an agent. Runs go through a bounded queue (a few at once,
 * a bounded number waiting, 503 past it); each run works on its hosts with
 * its own bounded concurrency. A request costs what it names: creating a
 * push writes its hosts; reading one reads a page of them.
 */
export class PushService {
  private readonly init: PushServiceInit
  private readonly store: Store
  private readonly now: () => number
  private readonly waiting: string[] = []
  private readonly active = new Map<string, ActiveRun>()
  private readonly runs = new Set<Promise<void>>()
  private endpointValue: CoordinatorEndpoint = {}
  private closed = false

  constructor (init: PushServiceInit) {
    this.init = init
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  /** The URL (and certificate fingerprint) pushed agents are told to reach this coordinator by. */
  setEndpoint (endpoint: CoordinatorEndpoint): void {
    this.endpointValue = endpoint
  }

  endpoint (): CoordinatorEndpoint {
    return this.endpointValue
  }

  private get runningLimit (): number {
    return this.init.runningPushes ?? DEFAULT_RUNNING_PUSHES
  }

  private get queueLimit (): number {
    return this.init.queuedPushes ?? DEFAULT_QUEUED_PUSHES
  }

  /** Runs left queued or running by the last stop go on; attempts cut short are recorded as interrupted. */
  async open (): Promise<void> {
    for await (const record of this.store.collections.pushInstalls.values()) {
      if (record.status !== 'queued' && record.status !== 'running') continue
      const counts = emptyCounts()
      const operations: WriteOperation[] = []
      for await (const host of this.store.collections.pushHosts.values({ prefix: `${record.id}!${String(record.run).padStart(6, '0')}!` })) {
        if (host.state === 'running' || host.state === 'waiting') {
          const last = host.attempts.at(-1)
          if (last !== undefined && last.outcome === undefined) Object.assign(last, { endedAt: new Date(this.now()).toISOString(), outcome: 'failed', reason: 'interrupted', detail: 'the coordinator stopped during this attempt' })
          host.state = 'pending'
          delete host.nextAttemptAt
          operations.push({ type: 'put', collection: 'pushHosts', key: hostKey(record.id, record.run, host.index), value: host })
        }
        counts[host.state]++
      }
      const resumed: PushInstallRecord = { ...record, status: 'queued', counts, updatedAt: new Date(this.now()).toISOString() }
      await this.store.write([...operations, { type: 'put', collection: 'pushInstalls', key: record.id, value: resumed }])
      this.waiting.push(record.id)
      this.init.logger.info({ pushId: record.id, run: record.run }, 'a push install run interrupted by the last stop goes on')
    }
    this.pump()
  }

  async create (request: CreatePushRequest, actor: string): Promise<PushInstallRecord> {
    const spec = await this.validate(request)
    const now = new Date(this.now()).toISOString()
    const record: PushInstallRecord = {
      ...spec,
      id: `push-${this.now().toString(36).padStart(9, '0')}-${randomBytes(4).toString('hex')}`,
      status: 'saved',
      run: 0,
      counts: emptyCounts(),
      createdAt: now,
      createdBy: actor,
      updatedAt: now
    }
    if (request.start === false) {
      await this.store.write([{ type: 'put', collection: 'pushInstalls', key: record.id, value: record }])
      return record
    }
    return await this.startRun(record, spec.hosts.map((_, index) => index), actor)
  }

  private async validate (request: CreatePushRequest): Promise<PushInstallSpec> {
    const errors: Array<{ path: string, message: string }> = []
    const port = request.port ?? DEFAULT_SSH_PORT
    const seen = new Map<string, string>()
    request.hosts.forEach((host, index) => {
      try {
        const entry = parseHostEntry(host, port)
        const id = hostKeyId(entry)
        if (seen.has(id)) errors.push({ path: `hosts.${index}`, message: `${host} is ${seen.get(id)!} again` })
        seen.set(id, host)
      } catch (error) {
        if (!(error instanceof HostEntryError)) throw error
        errors.push({ path: `hosts.${index}`, message: error.message })
      }
    })
    const fingerprints: Record<string, string> = {}
    for (const [host, fingerprint] of Object.entries(request.hostKeyFingerprints ?? {})) {
      const normalized = normalizeHostKeyFingerprint(fingerprint)
      if (!request.hosts.includes(host)) errors.push({ path: `hostKeyFingerprints.${host}`, message: 'names a host the push does not list' })
      else if (normalized === undefined) errors.push({ path: `hostKeyFingerprints.${host}`, message: 'is not a SHA-256 fingerprint (SHA256:… as ssh-keygen -l prints it)' })
      else fingerprints[host] = normalized
    }
    const credentials = await this.init.credentials.views(request.credentials)
    credentials.forEach((credential, index) => {
      if (credential === undefined) errors.push({ path: `credentials.${index}`, message: `no credential ${request.credentials[index]}` })
    })
    if (new Set(request.credentials).size !== request.credentials.length) errors.push({ path: 'credentials', message: 'a credential is listed twice' })
    const reboot = typeof request.reboot === 'string' ? { policy: request.reboot } : request.reboot ?? { policy: 'never' as const }
    if (reboot.policy === 'ask') errors.push({ path: 'reboot', message: 'asking the user before a reboot needs an agent on the device to ask: push the agent, then give its tasks reboot policy prompt' })
    if (request.install !== 'agent' && request.agent !== undefined) errors.push({ path: 'agent', message: 'agent settings go with install: agent' })
    if (request.install === 'agent' && request.agent?.installPrefix !== undefined && reboot.policy === 'always') errors.push({ path: 'reboot', message: 'an agent unpacked under a prefix is no system install: it does not reboot the host' })
    if (request.install === 'agent' && request.agent?.coordinatorUrl === undefined && this.endpointValue.url === undefined) errors.push({ path: 'agent.coordinatorUrl', message: 'this coordinator does not know the URL agents reach it by: give it (or start it with --public-url)' })
    if (errors.length > 0) throw new ValidationError(`invalid push install: ${errors.slice(0, 3).map(error => `${error.path}: ${error.message}`).join('; ')}`, errors)

    let name = request.name
    if (request.install === 'agent') {
      const manifest = await readAgentPackages(this.init.agentPackagesDir).catch(() => undefined)
      if (manifest === undefined || manifest.packages.length === 0) throw new ConflictError('no-agent-packages', `there are no agent packages in ${this.init.agentPackagesDir}: build them with npm run package:agent (or start the coordinator with --agent-packages DIR)`)
      name ??= `Installation of the meshdeploy agent ${manifest.version}`
    } else {
      const pkg = await this.init.packages.get(request.install.packageId)
      if (!PUSHABLE_KINDS.has(pkg.kind)) throw new ApiError(422, 'not-pushable', `${pkg.name} is a ${pkg.kind} package; a push installs deb, rpm and shell packages (others need the agent)`)
      name ??= `Installation of ${pkg.name} ${pkg.version}`
    }
    return {
      name,
      hosts: request.hosts,
      credentialIds: request.credentials,
      install: request.install === 'agent'
        ? {
            type: 'agent',
            ...(request.agent?.site !== undefined ? { site: request.agent.site } : {}),
            ...(request.agent?.groups !== undefined ? { groups: request.agent.groups } : {}),
            ...(request.agent?.coordinatorUrl !== undefined ? { coordinatorUrl: request.agent.coordinatorUrl } : {}),
            ...(request.agent?.installPrefix !== undefined ? { installPrefix: request.agent.installPrefix } : {}),
            enrollTimeoutSeconds: request.agent?.enrollTimeoutSeconds ?? DEFAULT_ENROLL_TIMEOUT_SECONDS
          }
        : { type: 'package', packageId: request.install.packageId, runArgs: request.install.runArgs ?? [] },
      maxAttempts: request.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      retryDelaySeconds: request.retryDelaySeconds ?? DEFAULT_RETRY_DELAY_SECONDS,
      reboot: { ...reboot, policy: reboot.policy === 'always' ? 'always' : 'never' },
      port,
      hostKeyFingerprints: fingerprints,
      concurrency: request.concurrency ?? DEFAULT_PUSH_CONCURRENCY,
      connectTimeoutSeconds: request.connectTimeoutSeconds ?? DEFAULT_CONNECT_TIMEOUT_SECONDS,
      commandTimeoutSeconds: request.commandTimeoutSeconds ?? DEFAULT_COMMAND_TIMEOUT_SECONDS
    }
  }

  /** Writes a new run of the given hosts and queues it; refused while one runs or when the queue is full. */
  private async startRun (record: PushInstallRecord, indexes: number[], actor: string): Promise<PushInstallRecord> {
    if (record.status === 'queued' || record.status === 'running') throw new ConflictError('push-running', `push ${record.id} is ${record.status}; cancel it first or wait for it to end`)
    if (this.waiting.length >= this.queueLimit) throw new PushQueueFullError(this.queueLimit, 30)
    const run = record.run + 1
    const now = new Date(this.now()).toISOString()
    const counts = emptyCounts()
    counts.pending = indexes.length
    const started: PushInstallRecord = { ...record, status: 'queued', run, counts, startedAt: now, startedBy: actor, updatedAt: now }
    delete started.endedAt
    delete started.cancelledBy
    const operations: WriteOperation[] = indexes.map(index => {
      const entry = parseHostEntry(record.hosts[index], record.port)
      const host: PushHostRecord = { pushId: record.id, run, index, host: entry.host, address: entry.address, port: entry.port, state: 'pending', attempts: [], updatedAt: now }
      return { type: 'put', collection: 'pushHosts', key: hostKey(record.id, run, index), value: host }
    })
    await this.store.write([...operations, { type: 'put', collection: 'pushInstalls', key: record.id, value: started }])
    this.waiting.push(record.id)
    this.pump()
    return started
  }

  /** Starts the push again: the hosts of its last run that did not succeed, or all of them. */
  async rerun (id: string, request: z.infer<typeof rerunPushSchema>, actor: string): Promise<PushInstallRecord> {
    const record = await this.record(id)
    let indexes = record.hosts.map((_, index) => index)
    if ((request.hosts ?? 'unfinished') === 'unfinished' && record.run > 0) {
      indexes = []
      for await (const host of this.store.collections.pushHosts.values({ prefix: `${id}!${String(record.run).padStart(6, '0')}!` })) {
        if (host.state !== 'succeeded') indexes.push(host.index)
      }
      if (indexes.length === 0) throw new ConflictError('nothing-to-rerun', 'every host of the last run succeeded; ask for hosts: all to run on them again')
    }
    return await this.startRun(record, indexes, actor)
  }

  /** Stops a queued or running push: attempts under way are cut, hosts not yet final are cancelled. */
  async cancel (id: string, actor: string): Promise<PushInstallRecord> {
    const record = await this.record(id)
    const active = this.active.get(id)
    if (active !== undefined) {
      active.record.cancelledBy = actor
      active.controller.abort()
      return active.record
    }
    const position = this.waiting.indexOf(id)
    if (position < 0) throw new ConflictError('push-not-running', `push ${id} is ${record.status}, not queued or running`)
    this.waiting.splice(position, 1)
    const now = new Date(this.now()).toISOString()
    const counts = emptyCounts()
    const operations: WriteOperation[] = []
    for await (const host of this.store.collections.pushHosts.values({ prefix: `${id}!${String(record.run).padStart(6, '0')}!` })) {
      if (!FINAL_STATES.has(host.state)) {
        host.state = 'cancelled'
        host.message = 'cancelled before it started'
        host.updatedAt = now
        operations.push({ type: 'put', collection: 'pushHosts', key: hostKey(id, record.run, host.index), value: host })
      }
      counts[host.state]++
    }
    const cancelled: PushInstallRecord = { ...record, status: 'cancelled', counts, cancelledBy: actor, endedAt: now, updatedAt: now }
    await this.store.write([...operations, { type: 'put', collection: 'pushInstalls', key: id, value: cancelled }])
    return cancelled
  }

  private async record (id: string): Promise<PushInstallRecord> {
    const active = this.active.get(id)
    if (active !== undefined) return active.record
    const record = await this.store.collections.pushInstalls.get(id)
    if (record === undefined) throw new NotFoundError('push install', id)
    return record
  }

  async get (id: string): Promise<PushInstallRecord> {
    return structuredClone(await this.record(id))
  }

  /** A page of a run's hosts with every attempt. */
  async hosts (id: string, query: z.infer<typeof pushHostsQuerySchema> = {}): Promise<{ run: number, hosts: PushHostRecord[], nextCursor?: string }> {
    const record = await this.record(id)
    const run = query.run ?? record.run
    if (run > record.run) throw new NotFoundError(`run ${run} of push install`, id)
    const limit = query.limit ?? DEFAULT_PUSH_PAGE
    const prefix = `${id}!${String(run).padStart(6, '0')}!`
    const hosts: PushHostRecord[] = []
    let nextCursor: string | undefined
    for await (const host of this.store.collections.pushHosts.values({ prefix, ...(query.cursor !== undefined ? { after: `${prefix}${query.cursor}` } : {}) })) {
      if (query.state !== undefined && host.state !== query.state) continue
      if (hosts.length === limit) {
        nextCursor = String(hosts[hosts.length - 1].index).padStart(6, '0')
        break
      }
      hosts.push(host)
    }
    return nextCursor === undefined ? { run, hosts } : { run, hosts, nextCursor }
  }

  /** A page of push installs, newest first. */
  async list (query: z.infer<typeof pushListQuerySchema> = {}): Promise<{ pushInstalls: PushSummary[], nextCursor?: string }> {
    const limit = query.limit ?? DEFAULT_PUSH_PAGE
    const pushInstalls: PushSummary[] = []
    for await (const record of this.store.collections.pushInstalls.values({ reverse: true, limit: limit + 1, ...(query.cursor !== undefined ? { after: query.cursor } : {}) })) {
      pushInstalls.push(summary(this.active.get(record.id)?.record ?? record))
    }
    if (pushInstalls.length <= limit) return { pushInstalls }
    pushInstalls.pop()
    return { pushInstalls, nextCursor: pushInstalls[pushInstalls.length - 1].id }
  }

  private pump (): void {
    while (!this.closed && this.active.size < this.runningLimit && this.waiting.length > 0) {
      const id = this.waiting.shift()!
      const running = this.execute(id).catch(error => { this.init.logger.error({ err: error, pushId: id }, 'a push install run failed') })
      this.runs.add(running)
      void running.finally(() => {
        this.runs.delete(running)
        this.pump()
      })
    }
  }

  private async execute (id: string): Promise<void> {
    const stored = await this.store.collections.pushInstalls.get(id)
    if (stored === undefined) return
    const prefix = `${id}!${String(stored.run).padStart(6, '0')}!`
    const states = new Map<number, PushHostState>()
    const hosts: PushHostRecord[] = []
    for await (const host of this.store.collections.pushHosts.values({ prefix })) {
      states.set(host.index, host.state)
      if (!FINAL_STATES.has(host.state)) hosts.push(host)
    }
    const record: PushInstallRecord = { ...stored, status: 'running', updatedAt: new Date(this.now()).toISOString() }
    const active: ActiveRun = { record, states, controller: new AbortController(), writes: Promise.resolve() }
    this.active.set(id, active)
    try {
      await this.store.write([{ type: 'put', collection: 'pushInstalls', key: id, value: record }])
      this.init.logger.info({ pushId: id, run: record.run, hosts: hosts.length }, 'push install run started')
      const run = new PushRun({
        push: record,
        hosts,
        transport: this.init.transport,
        credentials: this.init.credentials,
        hostKeys: this.init.hostKeys,
        installer: this.init.installer,
        save: async host => { await this.saveHost(active, host) },
        logger: this.init.logger,
        signal: active.controller.signal,
        now: this.now,
        ...(this.init.sleep !== undefined ? { sleep: this.init.sleep } : {})
      })
      await run.execute()
      await active.writes
      // Stopping: the run stays queued or running in the store, and the next start resumes it.
      if (this.closed) return
      const now = new Date(this.now()).toISOString()
      record.status = active.controller.signal.aborted ? 'cancelled' : 'finished'
      record.endedAt = now
      record.updatedAt = now
      await this.store.write([{ type: 'put', collection: 'pushInstalls', key: id, value: record }])
      this.init.logger.info({ pushId: id, run: record.run, counts: record.counts, status: record.status }, 'push install run ended')
    } finally {
      this.active.delete(id)
    }
  }

  /** Stores a host and the push's counts together, one write of the run at a time. */
  private async saveHost (active: ActiveRun, host: PushHostRecord): Promise<void> {
    const write = active.writes.catch(() => {}).then(async () => {
      const previous = active.states.get(host.index)
      if (previous !== undefined && previous !== host.state) {
        active.record.counts[previous]--
        active.record.counts[host.state]++
      }
      active.states.set(host.index, host.state)
      active.record.updatedAt = new Date(this.now()).toISOString()
      await this.store.write([
        { type: 'put', collection: 'pushHosts', key: hostKey(host.pushId, host.run, host.index), value: structuredClone(host) },
        { type: 'put', collection: 'pushInstalls', key: active.record.id, value: active.record }
      ])
    })
    active.writes = write
    await write
  }

  /** Cancels what runs and waits for it: the coordinator is stopping (the next start resumes queued runs). */
  async close (): Promise<void> {
    this.closed = true
    for (const active of this.active.values()) active.controller.abort(STOPPING)
    await Promise.allSettled([...this.runs])
  }
}
