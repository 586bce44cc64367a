/** Byte helpers used across the wire formats. */

export function toHex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

export function fromHex (hex: string): Uint8Array {
  if (!/^(?:[0-9a-f]{2})*$/i.test(hex)) throw new TypeError('not a hex string')
  return new Uint8Array(Buffer.from(hex, 'hex'))
}

export function toBase64 (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')
}

/** Strict base64 decoding: Buffer.from silently skips bad characters, this refuses them. */
export function fromBase64 (text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new TypeError('not a base64 string')
  return new Uint8Array(Buffer.from(text, 'base64'))
}

export function utf8 (text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'utf8'))
}

export function fromUtf8 (bytes: Uint8Array): string {
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
}

/** Concatenates byte arrays, each preceded by its length as a 32-bit big-endian integer. */
export function lengthPrefixed (...parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + 4 + part.byteLength, 0)
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  let offset = 0
  for (const part of parts) {
    view.setUint32(offset, part.byteLength)
    offset += 4
    out.set(part, offset)
    offset += part.byteLength
  }
  return out
}

export const SHA256_HEX = /^[0-9a-f]{64}$/
