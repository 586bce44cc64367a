/** What a push install puts on its hosts: the agent, or a package's installer run without an agent. */
export type PushInstall =
  | {
    type: 'agent'
    /** Site the pushed agents enroll into. */
    site?: string
    groups?: string[]
    /** The URL the agents use to reach this coordinator. @default the coordinator's public URL */
    coordinatorUrl?: string
    /**
     * Unpack the agent under this folder instead of installing the system
     * package, and start it there without a service manager (labs, hosts
     * where the system must not change).
     */
    installPrefix?: string
    /** Seconds the push waits for a pushed agent to enroll. */
    enrollTimeoutSeconds: number
  }
  | {
    type: 'package'
    packageId: string
    /** Silent-install arguments. */
    runArgs: string[]
  }

export type PushRebootPolicy = 'never' | 'always'

export interface PushReboot {
  policy: PushRebootPolicy
  /** always: shown to logged-in users by shutdown(8). */
  message?: string
  /** always: minutes are what shutdown(8) counts in; rounded up. @default 60 */
  delaySeconds?: number
}

/** What an operator asked for; a re-run repeats it. */
export interface PushInstallSpec {
  name: string
  /** Host names or addresses, each optionally with `:port` (`[v6]:port`). */
  hosts: string[]
  /** Tried in this order on each host until one logs in with the rights to install. */
  credentialIds: string[]
  install: PushInstall
  /** Attempts per host, each trying the credentials in order. */
  maxAttempts: number
  retryDelaySeconds: number
  reboot: PushReboot
  /** SSH port of hosts that name none. */
  port: number
  /** Host (as listed) → the SHA-256 fingerprint its SSH host key must have; overrides a key pinned before. */
  hostKeyFingerprints: Record<string, string>
  /** Hosts worked on at once. */
  concurrency: number
  connectTimeoutSeconds: number
  /** Bound on each command the push runs, the installer included. */
  commandTimeoutSeconds: number
}

/** saved: never started; queued: waiting for a slot; running; finished: every host final; cancelled. */
export type PushStatus = 'saved' | 'queued' | 'running' | 'finished' | 'cancelled'

/** waiting: the next attempt is scheduled. */
export type PushHostState = 'pending' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'cancelled'

export const PUSH_HOST_STATES: readonly PushHostState[] = ['pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled']

export type PushCounts = Record<PushHostState, number>

export interface PushInstallRecord extends PushInstallSpec {
  id: string
  status: PushStatus
  /** The current (latest) run; 0 while saved and never started. */
  run: number
  /** Hosts of the current run and their states. */
  counts: PushCounts
  createdAt: string
  createdBy: string
  updatedAt: string
  startedAt?: string
  startedBy?: string
  endedAt?: string
  cancelledBy?: string
}

/**
 * Why an attempt on a host failed: unreachable, host-key-mismatch,
 * authentication-refused, not-enough-rights, credential-removed,
 * unsupported-platform, no-agent-package, package-removed, upload-failed,
 * installer-failed, installer-timeout, detection-failed, not-enrolled,
 * connection-lost, reboot-failed, interrupted, cancelled, internal-error.
 */
export type PushFailureReason =
  | 'unreachable' | 'host-key-mismatch' | 'authentication-refused' | 'not-enough-rights' | 'credential-removed'
  | 'unsupported-platform' | 'no-agent-package' | 'package-removed' | 'upload-failed' | 'installer-failed' | 'installer-timeout'
  | 'detection-failed' | 'not-enrolled' | 'connection-lost' | 'reboot-failed' | 'interrupted' | 'cancelled' | 'internal-error'

/** One credential tried in one attempt. */
export interface CredentialTry {
  credentialId: string
  /** As it was named when tried. */
  credentialName?: string
  outcome: 'accepted' | 'authentication-refused' | 'not-enough-rights' | 'credential-removed'
  detail?: string
}

export interface PushAttempt {
  number: number
  startedAt: string
  endedAt?: string
  credentials: CredentialTry[]
  outcome?: 'succeeded' | 'failed'
  reason?: PushFailureReason
  /** What happened, for the operator (bounded). */
  detail?: string
  exitCode?: number | null
  /** The end of what the installer printed (bounded). */
  outputTail?: string
}

/** One host in one run of a push install. */
export interface PushHostRecord {
  pushId: string
  run: number
  index: number
  /** As the operator listed it. */
  host: string
  address: string
  port: number
  state: PushHostState
  attempts: PushAttempt[]
  /** The credential that logged in with the rights to install. */
  credentialId?: string
  credentialName?: string
  /** What the host said it is (os-release PRETTY_NAME, machine). */
  platform?: string
  hostKeyFingerprint?: string
  /** The device the pushed agent enrolled as. */
  deviceId?: string
  /** The installer asked for a reboot that the push's policy did not do. */
  rebootRequired?: boolean
  /** A reboot was scheduled on the host. */
  rebootScheduled?: boolean
  /** The last word on the host, for lists. */
  message?: string
  nextAttemptAt?: string
  updatedAt: string
}

/** An SSH host key pinned at first contact (or from an operator's fingerprint). */
export interface PinnedHostKey {
  /** `<host>:<port>` */
  key: string
  fingerprint: string
  keyType?: string
  pinnedAt: string
  /** `first-contact`, or the operator who gave the fingerprint. */
  pinnedBy: string
}
