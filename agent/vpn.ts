import { networkInterfaces } from 'node:os'

/**
 * Name prefixes of VPN interfaces: OpenVPN and most clients (tun, tap),
 * WireGuard (wg), PPP-based VPNs (ppp), macOS (utun, ipsec), Cisco AnyConnect
 * (cscotun), GlobalProtect (gpd), Fortinet (fortissl), Zscaler and others (zt).
 */
export const DEFAULT_VPN_INTERFACE_PREFIXES: readonly string[] = ['tun', 'tap', 'wg', 'ppp', 'utun', 'ipsec', 'cscotun', 'gpd', 'fortissl', 'zt', 'nordlynx', 'tailscale']

/** Lists the names of the interfaces that are up (have an address). */
export type InterfaceLister = () => string[]

export const systemInterfaces: InterfaceLister = () => Object.keys(networkInterfaces())

/** The VPN interfaces among `names`: those starting with a prefix, without regard to case. Pure. */
export function vpnInterfacesAmong (names: readonly string[], prefixes: readonly string[]): string[] {
  const lowered = prefixes.map(prefix => prefix.toLowerCase()).filter(prefix => prefix !== '')
  return names.filter(name => lowered.some(prefix => name.toLowerCase().startsWith(prefix)))
}

export interface VpnDetectorInit {
  /** @default DEFAULT_VPN_INTERFACE_PREFIXES */
  prefixes?: readonly string[]
  /** @default the system's interfaces (os.networkInterfaces) */
  listInterfaces?: InterfaceLister
  /** How often a deferred task looks again. @default 15000 */
  checkIntervalMs?: number
}

/** Tells whether a VPN is connected, for tasks set to wait while one is. */
export class VpnDetector {
  readonly prefixes: readonly string[]
  readonly checkIntervalMs: number
  private readonly listInterfaces: InterfaceLister

  constructor (init: VpnDetectorInit = {}) {
    this.prefixes = init.prefixes ?? DEFAULT_VPN_INTERFACE_PREFIXES
    this.listInterfaces = init.listInterfaces ?? systemInterfaces
    this.checkIntervalMs = init.checkIntervalMs ?? 15_000
  }

  /** The VPN interfaces that are up now; empty when none is. */
  connected (): string[] {
    return vpnInterfacesAmong(this.listInterfaces(), this.prefixes)
  }
}
