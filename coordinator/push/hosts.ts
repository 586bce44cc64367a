import { isIP } from 'node:net'

export const DEFAULT_SSH_PORT = 22

export interface HostEntry {
  /** As listed. */
  host: string
  /** A host name or an address (IPv6 without brackets). */
  address: string
  port: number
}

/** A host entry that is not a host name, an address or either with a port. */
export class HostEntryError extends Error {
  constructor (entry: string, why: string) {
    super(`${JSON.stringify(entry.slice(0, 100))} ${why}`)
    this.name = 'HostEntryError'
  }
}

const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/

function port (text: string, entry: string): number {
  const value = Number(text)
  if (!/^\d{1,5}$/.test(text) || value < 1 || value > 65535) throw new HostEntryError(entry, 'has a port outside 1–65535')
  return value
}

/** `host`, `host:port`, an IPv4 or IPv6 address, `[v6]` or `[v6]:port`. */
export function parseHostEntry (entry: string, defaultPort = DEFAULT_SSH_PORT): HostEntry {
  const host = entry.trim()
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(host)
  if (bracketed !== null) {
    if (isIP(bracketed[1]) !== 6) throw new HostEntryError(entry, 'is not an IPv6 address in brackets')
    return { host, address: bracketed[1].toLowerCase(), port: bracketed[2] !== undefined ? port(bracketed[2], entry) : defaultPort }
  }
  if (isIP(host) !== 0) return { host, address: host.toLowerCase(), port: defaultPort }
  const colon = host.lastIndexOf(':')
  const name = colon >= 0 ? host.slice(0, colon) : host
  if (!HOST_NAME.test(name) && isIP(name) !== 4) throw new HostEntryError(entry, 'is not a host name or an address')
  return { host, address: name.toLowerCase().replace(/\.$/, ''), port: colon >= 0 ? port(host.slice(colon + 1), entry) : defaultPort }
}

/** Where a host's pinned key is kept: the address and port it was reached at. */
export function hostKeyId (entry: { address: string, port: number }): string {
  return `${entry.address}:${entry.port}`
}
