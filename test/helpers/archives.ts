import { crc32, gzipSync } from 'node:zlib'

export interface TarEntry {
  name: string
  content?: Buffer | string
  /** '0' file, '2' symlink, '1' hard link, '5' directory, '3' character device, '6' FIFO */
  type?: '0' | '1' | '2' | '3' | '5' | '6'
  linkName?: string
  mode?: number
}

function octal (value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0'
}

/** Writes raw ustar bytes, including entries no well-behaved tool would write. */
export function makeTar (entries: TarEntry[]): Buffer {
  const blocks: Buffer[] = []
  for (const entry of entries) {
    const content = Buffer.from(entry.content ?? '')
    const header = Buffer.alloc(512)
    header.write(entry.name, 0, 100, 'utf8')
    header.write(octal(entry.mode ?? 0o644, 8), 100)
    header.write(octal(0, 8), 108)
    header.write(octal(0, 8), 116)
    header.write(octal(entry.type === undefined || entry.type === '0' ? content.byteLength : 0, 12), 124)
    header.write(octal(0, 12), 136)
    header.write('        ', 148)
    header.write(entry.type ?? '0', 156)
    if (entry.linkName !== undefined) header.write(entry.linkName, 157, 100, 'utf8')
    header.write('ustar\u000000', 257)
    let sum = 0
    for (const byte of header) sum += byte
    header.write(octal(sum, 7) + ' ', 148)
    blocks.push(header)
    if (entry.type === undefined || entry.type === '0') {
      blocks.push(content, Buffer.alloc((512 - (content.byteLength % 512)) % 512))
    }
  }
  blocks.push(Buffer.alloc(1024))
  return Buffer.concat(blocks)
}

export function makeTarGz (entries: TarEntry[]): Buffer {
  return gzipSync(makeTar(entries))
}

export interface ZipEntry {
  name: string
  content?: Buffer | string
  /** Unix mode in the external attributes, e.g. 0o120777 for a symbolic link. */
  unixMode?: number
}

/** Writes a stored (uncompressed) zip archive, including entries no well-behaved tool would write. */
export function makeZip (entries: ZipEntry[]): Buffer {
  const locals: Buffer[] = []
  const centrals: Buffer[] = []
  let offset = 0
  for (const entry of entries) {
    const name = Buffer.from(entry.name)
    const content = Buffer.from(entry.content ?? '')
    const crc = crc32(content)
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    local.writeUInt16LE(20, 4)
    local.writeUInt16LE(0, 6)
    local.writeUInt16LE(0, 8)
    local.writeUInt32LE(crc, 14)
    local.writeUInt32LE(content.byteLength, 18)
    local.writeUInt32LE(content.byteLength, 22)
    local.writeUInt16LE(name.byteLength, 26)
    locals.push(local, name, content)
    const central = Buffer.alloc(46)
    central.writeUInt32LE(0x02014b50, 0)
    central.writeUInt16LE((3 << 8) | 20, 4)
    central.writeUInt16LE(20, 6)
    central.writeUInt32LE(crc, 16)
    central.writeUInt32LE(content.byteLength, 20)
    central.writeUInt32LE(content.byteLength, 24)
    central.writeUInt16LE(name.byteLength, 28)
    central.writeUInt32LE(((entry.unixMode ?? 0o100644) << 16) >>> 0, 38)
    central.writeUInt32LE(offset, 42)
    centrals.push(central, name)
    offset += local.byteLength + name.byteLength + content.byteLength
  }
  const centralSize = centrals.reduce((sum, part) => sum + part.byteLength, 0)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(entries.length, 8)
  end.writeUInt16LE(entries.length, 10)
  end.writeUInt32LE(centralSize, 12)
  end.writeUInt32LE(offset, 16)
  return Buffer.concat([...locals, ...centrals, end])
}
