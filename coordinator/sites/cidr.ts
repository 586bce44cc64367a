import { BlockList, isIPv4, isIPv6 } from 'node:net'

/** An address range as written by an operator, checked and put in canonical form. */
export interface Cidr {
  /** Canonical text: IPv4 with its host bits cleared, IPv6 in lower case. */
  text: string
  family: 'ipv4' | 'ipv6'
  prefixLength: number
}

export class InvalidCidrError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidCidrError'
  }
}

/** Parses `a.b.c.d/n` or `x:y::/n`; a bare address is a single host. */
export function parseCidr (input: string): Cidr {
  const text = input.trim().toLowerCase()
  const slash = text.indexOf('/')
  const address = slash === -1 ? text : text.slice(0, slash)
  const lengthText = slash === -1 ? undefined : text.slice(slash + 1)
  const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined
  if (family === undefined) throw new InvalidCidrError(`${input} is not an IPv4 or IPv6 address range`)
  const maxLength = family === 'ipv4' ? 32 : 128
  const prefixLength = lengthText === undefined ? maxLength : Number(lengthText)
  if (lengthText !== undefined && (!/^\d{1,3}$/.test(lengthText) || prefixLength > maxLength)) {
    throw new InvalidCidrError(`${input}: the prefix length must be 0 to ${maxLength}`)
  }
  if (family === 'ipv6') return { text: `${address}/${prefixLength}`, family, prefixLength }
  const value = address.split('.').reduce((sum, part) => sum * 256 + Number(part), 0)
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0
  const network = (value & mask) >>> 0
  const dotted = [24, 16, 8, 0].map(shift => (network >>> shift) & 0xff).join('.')
  return { text: `${dotted}/${prefixLength}`, family, prefixLength }
}

/** Strips the IPv4-mapped prefix Node gives IPv4 peers of a dual-stack socket. */
export function normalizeAddress (address: string): string {
  const lower = address.trim().toLowerCase()
  return lower.startsWith('::ffff:') && isIPv4(lower.slice(7)) ? lower.slice(7) : lower
}

/** A compiled range: answers whether an address falls inside it. */
export class AddressRange {
  readonly cidr: Cidr
  private readonly list = new BlockList()

  constructor (cidr: Cidr) {
    this.cidr = cidr
    const [network] = cidr.text.split('/')
    this.list.addSubnet(network, cidr.prefixLength, cidr.family)
  }

  contains (address: string): boolean {
    const normalized = normalizeAddress(address)
    if (isIPv4(normalized)) return this.cidr.family === 'ipv4' && this.list.check(normalized, 'ipv4')
    if (isIPv6(normalized)) return this.cidr.family === 'ipv6' && this.list.check(normalized, 'ipv6')
    return false
  }
}
