import type { ConnectionGater, PeerId } from '@libp2p/interface'

export interface PeerGateInit {
  /** Whether a download currently bans the peer. */
  isBanned?: (peer: string) => boolean
}

/**
 * Who may connect: enrolled devices of this organisation (the coordinator's
 * allow-list, updated with every assignments answer) that no download has
 * banned. Refused peers are dropped as soon as their id is known: before
 * the socket opens when dialing, right after the encryption handshake when
 * they dial in.
 */
export class PeerGate {
  private allowed = new Set<string>()
  private readonly isBanned: (peer: string) => boolean

  constructor (init: PeerGateInit = {}) {
    this.isBanned = init.isBanned ?? (() => false)
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

  allows (peer: string): boolean {
    return this.allowed.has(peer) && !this.isBanned(peer)
  }

  /** The libp2p connection gater: each hook returns true to refuse. */
  connectionGater (): ConnectionGater {
    const deny = (peerId: PeerId): boolean => !this.allows(peerId.toString())
    return {
      denyDialPeer: deny,
      denyOutboundConnection: deny,
      denyOutboundEncryptedConnection: deny,
      denyInboundEncryptedConnection: deny,
      denyInboundUpgradedConnection: deny,
      denyOutboundUpgradedConnection: deny
    }
  }
}
