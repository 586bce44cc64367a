import pLimit from 'p-limit'
import { OUTPUT_TAIL_BYTES } from '../../protocol/index.js'
import type { CredentialService } from '../credentials/service.js'
import type { CredentialSecret } from '../credentials/types.js'
import type { Logger } from '../../protocol/logger.js'
import { hostKeyId } from './hosts.js'
import type { HostKeyBook } from './host-keys.js'
import { InstallStepError, type HostInstaller } from './installer.js'
import { describeHost, parseProbe, PROBE_COMMAND, sudoCheckCommand, type Elevation, type HostFacts } from './posix.js'
import { PushError, type PushTransport, type RemoteSession } from './transport.js'
import type { CredentialTry, PushAttempt, PushFailureReason, PushHostRecord, PushInstallRecord } from './types.js'

/** Failures no further attempt can mend: the operator must act (credentials, host keys, packages). */
const FINAL_REASONS: ReadonlySet<PushFailureReason> = new Set<PushFailureReason>([
  'host-key-mismatch', 'authentication-refused', 'not-enough-rights', 'credential-removed', 'unsupported-platform', 'no-agent-package', 'package-removed', 'cancelled'
])

export const MAX_DETAIL_CHARS = 1000

/** The abort reason of a run cut short because the coordinator stops: its hosts are left for the next start to resume. */
export const STOPPING = 'coordinator-stopping'

export function isFinalReason (reason: PushFailureReason): boolean {
  return FINAL_REASONS.has(reason)
}

function bounded (text: string, limit = MAX_DETAIL_CHARS): string {
  return text.length > limit ? `${text.slice(0, limit)}…` : text
}

export interface PushRunInit {
  push: PushInstallRecord
  /** The hosts of the run that are not final yet. */
  hosts: PushHostRecord[]
  transport: PushTransport
  credentials: CredentialService
  hostKeys: HostKeyBook
  installer: HostInstaller
  /** Stores a host's record (and the push's counts) before the run goes on. */
  save: (host: PushHostRecord) => Promise<void>
  logger: Logger
  signal: AbortSignal
  now?: () => number
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>
}

async function abortableSleep (ms: number, signal: AbortSignal): Promise<void> {
  const { setTimeout: wait } = await import('node:timers/promises')
  await wait(ms, undefined, { signal })
}

interface AttemptEnd {
  outcome: 'succeeded' | 'failed'
  reason?: PushFailureReason
  detail: string
  exitCode?: number | null
  outputTail?: string
}

/**
 * One run of a push install: every host worked on with at most
 * `concurrency` at once (p-limit), each attempt trying the credentials in
 * order until one logs in with the rights to install, failed attempts
 * tried again after the retry delay up to the maximum, failures that no
 * attempt can mend (a refused host key, credentials refused everywhere)
 * ending the host at once. A host waiting for its next attempt holds no
 * slot. Nothing here is per request: the run is bounded by its hosts.
 */
export class PushRun {
  private readonly init: PushRunInit
  private readonly now: () => number
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>
  private readonly limit: ReturnType<typeof pLimit>

  constructor (init: PushRunInit) {
    this.init = init
    this.now = init.now ?? Date.now
    this.sleep = init.sleep ?? abortableSleep
    this.limit = pLimit(init.push.concurrency)
  }

  async execute (): Promise<void> {
    await Promise.all(this.init.hosts.map(async host => { await this.runHost(host) }))
  }

  private iso (): string {
    return new Date(this.now()).toISOString()
  }

  private async save (host: PushHostRecord): Promise<void> {
    host.updatedAt = this.iso()
    await this.init.save(host)
  }

  private async runHost (host: PushHostRecord): Promise<void> {
    const { push, signal } = this.init
    try {
      for (;;) {
        if (signal.aborted) return await this.cancel(host)
        const end = await this.limit(async () => signal.aborted ? undefined : await this.attempt(host))
        if (end === undefined || (signal.aborted && end.outcome !== 'succeeded')) return await this.cancel(host)
        if (end.outcome === 'succeeded' || isFinalReason(end.reason!) || host.attempts.length >= push.maxAttempts) {
          host.state = end.outcome
          delete host.nextAttemptAt
          if (end.outcome === 'failed' && !isFinalReason(end.reason!)) host.message = `${end.detail} (attempt ${host.attempts.length} of ${push.maxAttempts}; no attempts left)`
          await this.save(host)
          return
        }
        host.state = 'waiting'
        host.nextAttemptAt = new Date(this.now() + push.retryDelaySeconds * 1000).toISOString()
        await this.save(host)
        try {
          await this.sleep(push.retryDelaySeconds * 1000, signal)
        } catch {
          return await this.cancel(host)
        }
      }
    } catch (error) {
      // A failure of the coordinator itself (its store): the host is left as it was saved last.
      this.init.logger.error({ err: error, pushId: push.id, host: host.host }, 'a push install could not go on with a host')
    }
  }

  private async cancel (host: PushHostRecord): Promise<void> {
    if (this.init.signal.reason === STOPPING) return
    const last = host.attempts.at(-1)
    if (last !== undefined && last.outcome === undefined) Object.assign(last, { endedAt: this.iso(), outcome: 'failed', reason: 'cancelled', detail: 'the push was cancelled' })
    host.state = 'cancelled'
    host.message = 'cancelled'
    delete host.nextAttemptAt
    await this.save(host)
  }

  /** One attempt on one host: the credentials in order, then the install with the first that has the rights. */
  private async attempt (host: PushHostRecord): Promise<AttemptEnd> {
    const attempt: PushAttempt = { number: host.attempts.length + 1, startedAt: this.iso(), credentials: [] }
    host.attempts.push(attempt)
    host.state = 'running'
    delete host.nextAttemptAt
    await this.save(host)
    const end = await this.tryCredentials(host, attempt).catch((error: unknown): AttemptEnd => {
      if (error instanceof PushError) {
        return {
          outcome: 'failed',
          reason: error.reason,
          detail: error.message,
          ...(error instanceof InstallStepError && error.exitCode !== undefined ? { exitCode: error.exitCode } : {}),
          ...(error instanceof InstallStepError && error.outputTail !== undefined ? { outputTail: error.outputTail } : {})
        }
      }
      this.init.logger.error({ err: error, pushId: this.init.push.id, host: host.host }, 'a push attempt failed unexpectedly')
      return { outcome: 'failed', reason: 'internal-error', detail: `the coordinator failed: ${(error as Error).message}` }
    })
    Object.assign(attempt, {
      endedAt: this.iso(),
      outcome: end.outcome,
      detail: bounded(end.detail),
      ...(end.reason !== undefined ? { reason: end.reason } : {}),
      ...(end.exitCode !== undefined ? { exitCode: end.exitCode } : {}),
      ...(end.outputTail !== undefined && end.outputTail !== '' ? { outputTail: bounded(end.outputTail, OUTPUT_TAIL_BYTES) } : {})
    })
    host.message = bounded(end.detail)
    return end
  }

  private async tryCredentials (host: PushHostRecord, attempt: PushAttempt): Promise<AttemptEnd> {
    const { push, signal } = this.init
    const record = (entry: CredentialTry): void => { attempt.credentials.push(entry) }
    for (const credentialId of push.credentialIds) {
      if (signal.aborted) throw new PushError('cancelled', 'the push was cancelled')
      const opened = await this.init.credentials.secretOf(credentialId)
      if (opened === undefined) {
        record({ credentialId, outcome: 'credential-removed', detail: 'the credential was removed' })
        continue
      }
      const { credential, secret } = opened
      let session: RemoteSession
      try {
        session = await this.init.transport.open({ address: host.address, port: host.port }, { user: credential.user, secret }, {
          connectTimeoutMs: push.connectTimeoutSeconds * 1000,
          signal,
          checkHostKey: async presented => {
            host.hostKeyFingerprint = presented.fingerprint
            const expected = push.hostKeyFingerprints[host.host]
            await this.init.hostKeys.check({ id: hostKeyId(host), presented, ...(expected !== undefined ? { expected } : {}), actor: push.createdBy })
          }
        })
      } catch (error) {
        if (error instanceof PushError && error.reason === 'authentication-refused') {
          record({ credentialId, credentialName: credential.name, outcome: 'authentication-refused', detail: bounded(error.message) })
          continue
        }
        throw error
      }
      try {
        const facts = parseProbe((await session.exec(PROBE_COMMAND, { timeoutMs: 60_000, signal })).stdout)
        host.platform = describeHost(facts)
        const elevation = await this.elevation(session, facts, secret, signal)
        if (typeof elevation !== 'string') {
          record({ credentialId, credentialName: credential.name, outcome: 'not-enough-rights', detail: bounded(elevation.detail) })
          continue
        }
        record({ credentialId, credentialName: credential.name, outcome: 'accepted' })
        host.credentialId = credential.id
        host.credentialName = credential.name
        await this.save(host)
        const result = await this.init.installer.install({
          session, facts, elevation, push, host, signal,
          ...(secret.type === 'account' ? { password: secret.password } : {})
        })
        if (result.deviceId !== undefined) host.deviceId = result.deviceId
        if (result.rebootRequired === true) host.rebootRequired = true
        if (result.rebootScheduled === true) host.rebootScheduled = true
        return {
          outcome: 'succeeded',
          detail: result.message,
          ...(result.exitCode !== undefined ? { exitCode: result.exitCode } : {}),
          ...(result.outputTail !== undefined ? { outputTail: result.outputTail } : {})
        }
      } finally {
        session.close()
      }
    }
    const refusals = attempt.credentials
    const reason: PushFailureReason = refusals.some(entry => entry.outcome === 'not-enough-rights')
      ? 'not-enough-rights'
      : refusals.some(entry => entry.outcome === 'authentication-refused') ? 'authentication-refused' : 'credential-removed'
    const names = refusals.map(entry => `${entry.credentialName ?? entry.credentialId}: ${entry.outcome}`).join('; ')
    return { outcome: 'failed', reason, detail: `no credential could install: ${names}` }
  }

  /** Whether the login may install: it is root, or sudo lets it (with the account's password on standard input). */
  private async elevation (session: RemoteSession, facts: HostFacts, secret: CredentialSecret, signal: AbortSignal): Promise<Elevation | { detail: string }> {
    if (facts.uid === 0) return 'root'
    if (!facts.tools.has('sudo')) return { detail: `logged in as uid ${facts.uid}, which is not root, and the host has no sudo` }
    const withPassword = secret.type === 'account'
    const check = await session.exec(sudoCheckCommand(withPassword), { timeoutMs: 30_000, signal, ...(withPassword ? { stdin: `${secret.password}\n` } : {}) })
    if (check.exitCode === 0) return withPassword ? 'sudo-password' : 'sudo'
    const said = check.outputTail.trim().split('\n').filter(line => line.trim() !== '').slice(-2).join(' ')
    return { detail: `logged in, but sudo refused to run commands as root${said !== '' ? `: ${said}` : ''}` }
  }
}
