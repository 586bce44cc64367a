import { gunzipSync } from 'node:zlib'
import { Header } from 'tar'
import { CAPTURE_HEADER_ENTRY, captureHeaderSchema, type Architecture, type PackageKind, type Platform } from '../../protocol/index.js'

export interface SniffedType {
  kind: PackageKind
  platform: Platform
  arch: Architecture
}

const PLATFORM_OF_KIND: Record<PackageKind, Platform> = {
  msi: 'windows',
  exe: 'windows',
  bat: 'windows',
  ps1: 'windows',
  pkg: 'macos',
  deb: 'linux',
  rpm: 'linux',
  shell: 'linux',
  tar: 'any',
  'tar.gz': 'any',
  zip: 'any',
  file: 'any',
  // A capture package names the OS it was taken on in its header; without one it is taken for Linux, where captures are made.
  capture: 'linux'
}

export function platformOfKind (kind: PackageKind): Platform {
  return PLATFORM_OF_KIND[kind]
}

function startsWith (bytes: Uint8Array, signature: number[], offset = 0): boolean {
  if (bytes.byteLength < offset + signature.length) return false
  return signature.every((byte, index) => bytes[offset + index] === byte)
}

function isTar (bytes: Uint8Array): boolean {
  return bytes.byteLength >= 263 && Buffer.from(bytes.subarray(257, 262)).toString('latin1') === 'ustar'
}

function looksLikeText (bytes: Uint8Array): boolean {
  const sample = bytes.subarray(0, Math.min(bytes.byteLength, 4096))
  if (sample.byteLength === 0) return false
  let control = 0
  for (const byte of sample) {
    if (byte === 0) return false
    if (byte < 9 || (byte > 13 && byte < 32)) control++
  }
  return control / sample.byteLength < 0.01
}

/** The machine type of a PE image: x64, arm64, or any for others. */
function peArch (bytes: Uint8Array): Architecture {
  if (bytes.byteLength < 0x40) return 'any'
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const peOffset = view.readUInt32LE(0x3c)
  if (peOffset + 6 > view.byteLength || view.toString('latin1', peOffset, peOffset + 4) !== 'PE\u0000\u0000') return 'any'
  const machine = view.readUInt16LE(peOffset + 4)
  if (machine === 0x8664) return 'x64'
  if (machine === 0xaa64) return 'arm64'
  return 'any'
}

/**
 * A capture package starts with its header entry: the kind, and the
 * platform and architecture it was captured on, come from there. Undefined
 * when the archive does not start with a readable capture header.
 */
function sniffCapture (tarHead: Uint8Array): SniffedType | undefined {
  if (tarHead.byteLength < 512) return undefined
  let header: Header
  try {
    header = new Header(Buffer.from(tarHead.buffer, tarHead.byteOffset, 512))
  } catch {
    return undefined
  }
  if (header.path !== CAPTURE_HEADER_ENTRY || header.size === undefined || 512 + header.size > tarHead.byteLength) return undefined
  try {
    const parsed = captureHeaderSchema.safeParse(JSON.parse(Buffer.from(tarHead.subarray(512, 512 + header.size)).toString('utf8')))
    if (!parsed.success) return undefined
    return { kind: 'capture', platform: parsed.data.source.os, arch: parsed.data.source.arch }
  } catch {
    return undefined
  }
}

/**
 * Works out the kind and platform of a package from its first bytes (magic
 * numbers), with the file name only to tell apart text formats that have
 * none (batch files and PowerShell scripts).
 */
export function sniffPackageType (head: Uint8Array, fileName: string): SniffedType {
  const lower = fileName.toLowerCase()
  const of = (kind: PackageKind, arch: Architecture = 'any'): SniffedType => ({ kind, platform: PLATFORM_OF_KIND[kind], arch })

  if (startsWith(head, [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1])) return of('msi')
  if (startsWith(head, [0x4d, 0x5a])) return of('exe', peArch(head))
  if (startsWith(head, [0x78, 0x61, 0x72, 0x21])) return of('pkg')
  if (startsWith(head, [0xed, 0xab, 0xee, 0xdb])) return of('rpm')
  if (Buffer.from(head.subarray(0, 21)).toString('latin1') === '!<arch>\ndebian-binary') return of('deb')
  if (startsWith(head, [0x50, 0x4b, 0x03, 0x04]) || startsWith(head, [0x50, 0x4b, 0x05, 0x06])) return of('zip')
  if (startsWith(head, [0x1f, 0x8b])) {
    try {
      const inflated = gunzipSync(head, { finishFlush: 2 /* Z_SYNC_FLUSH: tolerate a truncated stream */ })
      if (isTar(inflated)) return sniffCapture(inflated) ?? of('tar.gz')
    } catch {
      // not a complete gzip member in the sample: plain compressed file
    }
    return of('file')
  }
  if (isTar(head)) return of('tar')
  if (startsWith(head, [0x23, 0x21])) {
    const line = Buffer.from(head.subarray(0, Math.min(200, head.byteLength))).toString('latin1').split('\n')[0]
    if (/pwsh|powershell/i.test(line)) return of('ps1')
    return of('shell')
  }
  if (looksLikeText(head)) {
    if (lower.endsWith('.bat') || lower.endsWith('.cmd')) return of('bat')
    if (lower.endsWith('.ps1')) return of('ps1')
    if (lower.endsWith('.sh')) return of('shell')
  }
  return of('file')
}
