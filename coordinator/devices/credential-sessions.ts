/**
 * Notices one device credential used by two live agents at once: a copied
 * `agent.json` running on a second machine, or a stolen credential used from
 * elsewhere while the device runs.
 *
 * Every agent process names itself with a random session id on each request
 * (the `meshdeploy-session` header); a request without one counts as the
 * session last seen from its address, or else as a session of its own per
 * address. One agent's requests come from one session, so a restarted agent
 * leaves its old session behind for good. Two agents sharing a credential
 * take turns: each of their sessions comes back after the other's requests.
 * A credential is reported as shared once at least two sessions have each
 * come back `returnsToFlag` times within the window. A one-shot command on
 * the device (a self-service request from its CLI) never comes back, and
 * does not count.
 *
 * A second sign needs no session ids: two agents with one key sign different
 * status records under the same (task, attempt, seq), which one agent never
 * does. `conflictsToFlag` such records within the window flag the credential
 * too (one alone may follow a crash that lost a record the disk would not
 * take).
 *
 * Pure: the clock is injected, nothing is written; memory is bounded by the
 * devices heard from within the window and `maxSessionsPerDevice`.
 */

export { AGENT_SESSION_HEADER as SESSION_HEADER } from '../../protocol/ids.js'

/** @default 10 minutes */
export const DEFAULT_SESSION_WINDOW_MS = 10 * 60_000
/** @default 2 */
export const DEFAULT_RETURNS_TO_FLAG = 2
/** @default 8 */
export const DEFAULT_MAX_SESSIONS_PER_DEVICE = 8
/** @default 3 */
export const DEFAULT_CONFLICTS_TO_FLAG = 3

export interface CredentialSessionsInit {
  /** @default Date.now */
  now?: () => number
  /** How long a session counts as live after its last request. @default DEFAULT_SESSION_WINDOW_MS */
  windowMs?: number
  /** Comebacks within the window each of two sessions needs before the credential counts as shared. @default DEFAULT_RETURNS_TO_FLAG */
  returnsToFlag?: number
  /** @default DEFAULT_MAX_SESSIONS_PER_DEVICE */
  maxSessionsPerDevice?: number
  /** Conflicting status records within the window that flag the credential. @default DEFAULT_CONFLICTS_TO_FLAG */
  conflictsToFlag?: number
}

/** What showed the credential is shared. */
export type SharedCredentialEvidence = 'sessions-taking-turns' | 'conflicting-status-records'

export interface SessionSighting {
  /** The agent's session id, when it sent one. */
  session?: string
  /** The address the request came from. */
  address?: string
}

/** What the coordinator saw: the live sessions and where they came from. */
export interface SharedCredentialFinding {
  deviceId: string
  detectedAt: number
  evidence: SharedCredentialEvidence
  /** Sessions taking turns with the credential: the agents running with it at once. */
  sessions: number
  /** Sessions seen within the window, a restarted agent's earlier ones included. */
  seen: number
  /** Addresses of the sessions taking turns, most recent first. */
  addresses: string[]
}

interface Session {
  address?: string
  lastAt: number
  /** Times it came back after another session's request. */
  returns: number[]
}

interface DeviceSessions {
  sessions: Map<string, Session>
  current: string
  lastAt: number
  /** Times of conflicting status records. */
  conflicts: number[]
  flaggedAt?: number
}

export class CredentialSessions {
  private readonly now: () => number
  private readonly windowMs: number
  private readonly returnsToFlag: number
  private readonly maxSessionsPerDevice: number
  private readonly conflictsToFlag: number
  /** In order of last request: the oldest first, so that quiet devices are let go from the front. */
  private readonly devices = new Map<string, DeviceSessions>()

  constructor (init: CredentialSessionsInit = {}) {
    this.now = init.now ?? Date.now
    this.windowMs = init.windowMs ?? DEFAULT_SESSION_WINDOW_MS
    this.returnsToFlag = init.returnsToFlag ?? DEFAULT_RETURNS_TO_FLAG
    this.maxSessionsPerDevice = init.maxSessionsPerDevice ?? DEFAULT_MAX_SESSIONS_PER_DEVICE
    this.conflictsToFlag = init.conflictsToFlag ?? DEFAULT_CONFLICTS_TO_FLAG
  }

  /** Notes a request of a device; answers a finding the first time its credential looks shared (and again once a window passed without one). */
  note (deviceId: string, sighting: SessionSighting): SharedCredentialFinding | undefined {
    const now = this.now()
    let state = this.refresh(deviceId, now)
    const key = this.keyOf(state, sighting)
    if (state === undefined) state = { sessions: new Map(), current: key, lastAt: now, conflicts: [] }
    this.devices.set(deviceId, state)
    let session = state.sessions.get(key)
    if (session === undefined) {
      session = { lastAt: now, returns: [] }
      state.sessions.set(key, session)
      if (state.sessions.size > this.maxSessionsPerDevice) {
        let oldest: string | undefined
        for (const [other, entry] of state.sessions) if (other !== key && (oldest === undefined || entry.lastAt < state.sessions.get(oldest)!.lastAt)) oldest = other
        if (oldest !== undefined) state.sessions.delete(oldest)
      }
    } else if (state.current !== key) {
      session.returns.push(now)
    }
    session.lastAt = now
    if (sighting.address !== undefined) session.address = sighting.address
    state.current = key
    const interleaved = [...state.sessions.values()].filter(entry => entry.returns.length >= this.returnsToFlag)
    if (interleaved.length < 2) return undefined
    return this.finding(deviceId, state, now, 'sessions-taking-turns', interleaved)
  }

  /** Notes a status record of a device that differs from the one stored under its (task, attempt, seq). */
  noteConflict (deviceId: string): SharedCredentialFinding | undefined {
    const now = this.now()
    const state: DeviceSessions = this.refresh(deviceId, now) ?? { sessions: new Map(), current: '', lastAt: now, conflicts: [] }
    this.devices.set(deviceId, state)
    state.conflicts.push(now)
    if (state.conflicts.length > this.conflictsToFlag) state.conflicts.shift()
    if (state.conflicts.length < this.conflictsToFlag) return undefined
    return this.finding(deviceId, state, now, 'conflicting-status-records', [...state.sessions.values()])
  }

  /** The device's state with what the window no longer holds dropped, taken out of the order (the caller puts it back at the end). */
  private refresh (deviceId: string, now: number): DeviceSessions | undefined {
    this.letGo(now)
    const since = now - this.windowMs
    const state = this.devices.get(deviceId)
    if (state === undefined) return undefined
    this.devices.delete(deviceId)
    state.lastAt = now
    for (const [key, session] of state.sessions) {
      if (session.lastAt < since) state.sessions.delete(key)
      else while (session.returns.length > 0 && session.returns[0] < since) session.returns.shift()
    }
    while (state.conflicts.length > 0 && state.conflicts[0] < since) state.conflicts.shift()
    return state
  }

  private finding (deviceId: string, state: DeviceSessions, now: number, evidence: SharedCredentialEvidence, sessions: Session[]): SharedCredentialFinding | undefined {
    if (state.flaggedAt !== undefined && now - state.flaggedAt < this.windowMs) return undefined
    state.flaggedAt = now
    const addresses = [...new Set(sessions.sort((a, b) => b.lastAt - a.lastAt).map(entry => entry.address).filter((address): address is string => address !== undefined))]
    return { deviceId, detectedAt: now, evidence, sessions: Math.max(2, sessions.length), seen: state.sessions.size, addresses }
  }

  /** Forgets a device (blocked, retired, or its flag cleared). */
  forget (deviceId: string): void {
    this.devices.delete(deviceId)
  }

  /** Devices with live sessions (for tests and metrics). */
  get size (): number {
    return this.devices.size
  }

  private keyOf (state: DeviceSessions | undefined, sighting: SessionSighting): string {
    if (sighting.session !== undefined) return `session:${sighting.session}`
    // The agent's own requests without the header (an older agent, a helper) belong to the session at their address.
    if (state !== undefined && sighting.address !== undefined) {
      const current = state.sessions.get(state.current)
      if (current?.address === sighting.address) return state.current
      for (const [key, session] of state.sessions) if (session.address === sighting.address) return key
    }
    return `address:${sighting.address ?? 'unknown'}`
  }

  private letGo (now: number): void {
    const since = now - this.windowMs
    for (const [deviceId, state] of this.devices) {
      if (state.lastAt >= since) break
      this.devices.delete(deviceId)
    }
  }
}
