import type { ConnectionGater, PeerId } from '@libp2p/interface'

/** Suspensions remembered at most. */
export const MAX_SUSPENDED_PEERS = 10_000
/** Certified peers remembered at most (the least recently certified are forgotten first and certify again when they reconnect). */
export const MAX_CERTIFIED_PEERS = 10_000

/** Why the gate refuses a peer. */
export type PeerRefusalReason = 'peer-not-allowed' | 'peer-banned' | 'peer-suspended'

/** What a verified device certificate tells the gate about a peer. */
export interface CertifiedPeer {
  deviceId: string
  expiresAt: string
}

export interface PeerGateInit {
  /**
   * Admit peers by the device certificates they present (see
   * CertificateExchange) rather than by a fixed list: a connection is let
   * through the gater unless the peer is known to be refused, and the peer
   * is admitted to the protocols once its certificate verified. @default false
   */
  certificates?: boolean
  /** Whether a download currently bans the peer. */
  isBanned?: (peer: string) => boolean
  /** A connection the gater refused, and why (the caller logs it). */
  onRefused?: (peer: string, reason: PeerRefusalReason, direction: 'inbound' | 'outbound') => void
  now?: () => number
}

/**
 * Who may connect: enrolled devices of this organisation, proven by a device
 * certificate the coordinator signed (or, for a node that is not an agent,
 * a fixed list of peers), that the coordinator did not revoke, that no
 * download has banned and that are not suspended for abuse. Peers known to
 * be refused are dropped as soon as their id is known: before the socket
 * opens when dialing, right after the encryption handshake when they dial
 * in; a peer that presents no valid certificate is hung up on.
 */
export class PeerGate {
  private allowed = new Set<string>()
  private readonly certified = new Map<string, { deviceId: string, expiresAtMs: number }>()
  private revoked = new Set<string>()
  /** Peers waiting for a verdict (`whenAdmitted`). */
  private readonly waiting = new Map<string, Set<(admitted: boolean) => void>>()
  private readonly suspended = new Map<string, number>()
  private readonly isBanned: (peer: string) => boolean
  private readonly now: () => number
  private readonly init: PeerGateInit

  constructor (init: PeerGateInit = {}) {
    this.init = init
    this.isBanned = init.isBanned ?? (() => false)
    this.now = init.now ?? Date.now
  }

  /** Replaces the allow-list; returns the peers that lost their place (the caller hangs up on them). */
  setAllowed (peerIds: Iterable<string>): string[] {
    const next = new Set(peerIds)
    const removed = [...this.allowed].filter(peer => !next.has(peer))
    this.allowed = next
    return removed
  }

  get size (): number {
    return this.allowed.size + this.certified.size
  }

  /** Whether peers are admitted by their certificates. */
  get usesCertificates (): boolean {
    return this.init.certificates === true
  }

  /** A peer presented a verified certificate: admitted until it expires (unless revoked, banned or suspended). */
  certify (peer: string, certificate: CertifiedPeer): void {
    this.certified.delete(peer)
    this.certified.set(peer, { deviceId: certificate.deviceId, expiresAtMs: Date.parse(certificate.expiresAt) })
    while (this.certified.size > MAX_CERTIFIED_PEERS) this.certified.delete(this.certified.keys().next().value!)
    this.settle(peer, true)
  }

  /** A peer failed its certificate exchange: streams waiting for it are dropped. */
  reject (peer: string): void {
    this.settle(peer, false)
  }

  private settle (peer: string, admitted: boolean): void {
    const waiting = this.waiting.get(peer)
    this.waiting.delete(peer)
    for (const resume of waiting ?? []) resume(admitted)
  }

  /** The device a certified peer belongs to. */
  deviceOf (peer: string): string | undefined {
    return this.certified.get(peer)?.deviceId
  }

  /**
   * Takes the coordinator's list of revoked devices; returns the certified
   * peers that belong to one (the caller hangs up on them). Their redials
   * are refused by the gater.
   */
  setRevoked (deviceIds: Iterable<string>): string[] {
    this.revoked = new Set(deviceIds)
    const removed: string[] = []
    for (const [peer, entry] of this.certified) if (this.revoked.has(entry.deviceId)) removed.push(peer)
    return removed
  }

  isRevoked (deviceId: string): boolean {
    return this.revoked.has(deviceId)
  }

  /**
   * Resolves once the peer is admitted (true), or when the signal ends
   * first (false): a stream that arrives while the peer's certificate is
   * still being checked waits for it rather than being refused.
   */
  async whenAdmitted (peer: string, signal: AbortSignal): Promise<boolean> {
    if (this.allows(peer)) return true
    if (signal.aborted || !this.usesCertificates || this.connectionRefusal(peer) !== undefined) return false
    const admitted = await new Promise<boolean>(resolve => {
      const done = (verdict: boolean): void => {
        signal.removeEventListener('abort', aborted)
        this.waiting.get(peer)?.delete(done)
        resolve(verdict)
      }
      const aborted = (): void => { done(false) }
      signal.addEventListener('abort', aborted, { once: true })
      let set = this.waiting.get(peer)
      if (set === undefined) this.waiting.set(peer, set = new Set())
      set.add(done)
    })
    return admitted && this.allows(peer)
  }


  /** Refuses the peer until the given time (the caller hangs up on it). */
  suspend (peer: string, untilMs: number): void {
    const until = Math.max(untilMs, this.suspended.get(peer) ?? 0)
    this.suspended.delete(peer)
    this.suspended.set(peer, until)
    // Bounded: the oldest suspensions lapse first.
    while (this.suspended.size > MAX_SUSPENDED_PEERS) this.suspended.delete(this.suspended.keys().next().value!)
  }

  private certifiedNow (peer: string): boolean {
    const entry = this.certified.get(peer)
    if (entry === undefined) return false
    if (this.revoked.has(entry.deviceId)) return false
    if (entry.expiresAtMs <= this.now()) {
      this.certified.delete(peer)
      return false
    }
    return true
  }

  /** Why the peer is refused now, or undefined when it is admitted. */
  refusal (peer: string): PeerRefusalReason | undefined {
    if (!this.allowed.has(peer) && !this.certifiedNow(peer)) return 'peer-not-allowed'
    return this.conductRefusal(peer)
  }

  /**
   * Why a connection with the peer is refused before anything is exchanged:
   * with certificates only a peer known to be refused (revoked, banned,
   * suspended) is, since its certificate comes after the connection.
   */
  connectionRefusal (peer: string): PeerRefusalReason | undefined {
    if (!this.usesCertificates) return this.refusal(peer)
    const entry = this.certified.get(peer)
    if (entry !== undefined && this.revoked.has(entry.deviceId)) return 'peer-not-allowed'
    return this.conductRefusal(peer)
  }

  /** A connection with the peer may be attempted. */
  mayConnect (peer: string): boolean {
    return this.connectionRefusal(peer) === undefined
  }

  private conductRefusal (peer: string): PeerRefusalReason | undefined {
    if (this.isBanned(peer)) return 'peer-banned'
    const until = this.suspended.get(peer)
    if (until !== undefined) {
      if (until > this.now()) return 'peer-suspended'
      this.suspended.delete(peer)
    }
    return undefined
  }

  allows (peer: string): boolean {
    return this.refusal(peer) === undefined
  }

  /** The libp2p connection gater: each hook returns true to refuse. */
  connectionGater (): ConnectionGater {
    const deny = (direction: 'inbound' | 'outbound') => (peerId: PeerId): boolean => {
      const peer = peerId.toString()
      const reason = this.connectionRefusal(peer)
      if (reason === undefined) return false
      this.init.onRefused?.(peer, reason, direction)
      return true
    }
    return {
      denyDialPeer: deny('outbound'),
      denyOutboundConnection: deny('outbound'),
      denyOutboundEncryptedConnection: deny('outbound'),
      denyInboundEncryptedConnection: deny('inbound'),
      denyInboundUpgradedConnection: deny('inbound'),
      denyOutboundUpgradedConnection: deny('outbound')
    }
  }
}
