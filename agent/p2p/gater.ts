import type { ConnectionGater, PeerId } from '@libp2p/interface'

/** Suspensions remembered at most. */
export const MAX_SUSPENDED_PEERS = 10_000

/** Why the gate refuses a peer. */
export type PeerRefusalReason = 'peer-not-allowed' | 'peer-banned' | 'peer-suspended'

export interface PeerGateInit {
  /** Whether a download currently bans the peer. */
  isBanned?: (peer: string) => boolean
  /** A connection the gater refused, and why (the caller logs it). */
  onRefused?: (peer: string, reason: PeerRefusalReason, direction: 'inbound' | 'outbound') => void
  now?: () => number
}

/**
 * Who may connect: enrolled devices of this organisation (the coordinator's
 * allow-list, updated with every assignments answer) that no download has
 * banned and that are not suspended for abuse. Refused peers are dropped as
 * soon as their id is known: before the socket opens when dialing, right
 * after the encryption handshake when they dial in.
 */
export class PeerGate {
  private allowed = new Set<string>()
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
    return this.allowed.size
  }

  /** Refuses the peer until the given time (the caller hangs up on it). */
  suspend (peer: string, untilMs: number): void {
    const until = Math.max(untilMs, this.suspended.get(peer) ?? 0)
    this.suspended.delete(peer)
    this.suspended.set(peer, until)
    // Bounded: the oldest suspensions lapse first.
    while (this.suspended.size > MAX_SUSPENDED_PEERS) this.suspended.delete(this.suspended.keys().next().value!)
  }

  /** Why the peer is refused now, or undefined when it is admitted. */
  refusal (peer: string): PeerRefusalReason | undefined {
    if (!this.allowed.has(peer)) return 'peer-not-allowed'
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
      const reason = this.refusal(peer)
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
