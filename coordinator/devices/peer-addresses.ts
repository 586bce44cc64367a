import { isIPv4, isIPv6 } from 'node:net'
import { normalizeAddress } from '../sites/cidr.js'

/** Addresses kept per device at most: an agent listens on a few interfaces, not on dozens. */
export const MAX_PEER_ADDRESSES = 8

/** An address a device reported that its site peers will not be handed, and why. */
export interface RefusedPeerAddress {
  address: string
  reason: 'not-an-ip-address' | 'unroutable-address' | 'outside-device-network' | 'too-many-addresses'
}

export interface PeerAddressCheck {
  /** The address the coordinator sees the device's request come from. */
  observedAddress?: string
  /** Whether an address lies inside one of the boundaries of the device's site. */
  inSite: (address: string) => boolean
}

const MULTIADDR = /^\/(ip4|ip6)\/([^/]+)\/tcp\/(\d{1,5})(?:\/p2p\/[1-9A-HJ-NP-Za-km-z]{30,100})?$/

/**
 * Keeps the libp2p addresses a device may hand its site peers: TCP on an
 * IP address (no DNS name, which could name anything) that is neither
 * unspecified, multicast nor broadcast, inside the network the device's
 * requests come from (its /24, or /64 for IPv6) or inside its site's
 * boundaries, at most MAX_PEER_ADDRESSES of them. A device could otherwise
 * make every agent of its site dial any host and port it names.
 */
export function acceptPeerAddresses (addresses: readonly string[], check: PeerAddressCheck): { accepted: string[], refused: RefusedPeerAddress[] } {
  const accepted: string[] = []
  const refused: RefusedPeerAddress[] = []
  const observed = check.observedAddress !== undefined ? normalizeAddress(check.observedAddress) : undefined
  for (const address of new Set(addresses)) {
    const match = MULTIADDR.exec(address)
    const host = match?.[2]
    const port = Number(match?.[3])
    if (match === null || host === undefined || (match[1] === 'ip4' ? !isIPv4(host) : !isIPv6(host)) || port < 1 || port > 65535) {
      refused.push({ address, reason: 'not-an-ip-address' })
    } else if (isUnroutable(host)) {
      refused.push({ address, reason: 'unroutable-address' })
    } else if (!(observed !== undefined && sameNetwork(host, observed)) && !check.inSite(host)) {
      refused.push({ address, reason: 'outside-device-network' })
    } else if (accepted.length >= MAX_PEER_ADDRESSES) {
      refused.push({ address, reason: 'too-many-addresses' })
    } else {
      accepted.push(address)
    }
  }
  return { accepted, refused }
}

/** Unspecified, multicast and broadcast addresses: nobody answers a dial there. */
function isUnroutable (host: string): boolean {
  if (isIPv4(host)) {
    const first = Number(host.split('.')[0])
    return host === '0.0.0.0' || host === '255.255.255.255' || (first >= 224 && first <= 239)
  }
  const lower = host.toLowerCase()
  return lower === '::' || lower.startsWith('ff')
}

/** Whether two addresses share a /24 (IPv4) or a /64 (IPv6). */
function sameNetwork (a: string, b: string): boolean {
  if (isIPv4(a) && isIPv4(b)) return a.split('.').slice(0, 3).join('.') === b.split('.').slice(0, 3).join('.')
  if (isIPv6(a) && isIPv6(b)) return expandIPv6(a).slice(0, 4).join(':') === expandIPv6(b).slice(0, 4).join(':')
  return false
}

/** The eight 16-bit groups of an IPv6 address, in lower case hex without leading zeros. */
function expandIPv6 (address: string): string[] {
  let text = address.toLowerCase().split('%')[0]
  // An embedded IPv4 tail becomes two groups.
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (tail !== null) {
    const [a, b, c, d] = tail[1].split('.').map(Number)
    text = text.slice(0, -tail[1].length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, rest] = text.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = rest === undefined || rest === '' ? [] : rest.split(':')
  const fill = rest === undefined ? [] : new Array(8 - left.length - right.length).fill('0')
  return [...left, ...fill, ...right].map(group => Number.parseInt(group, 16).toString(16))
}
