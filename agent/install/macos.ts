/** `key: value` lines of `pkgutil --pkg-info`. */
export interface PackageReceipt {
  packageId: string
  version: string
  volume: string
  location: string
  installTime?: number
}

/** Parses `pkgutil --pkg-info ID`; undefined when the output names no package. */
export function parsePkgInfo (output: string): PackageReceipt | undefined {
  const fields: Record<string, string> = {}
  for (const line of output.split(/\r?\n/)) {
    const index = line.indexOf(': ')
    if (index > 0) fields[line.slice(0, index).trim()] = line.slice(index + 2).trim()
  }
  if (fields['package-id'] === undefined) return undefined
  const receipt: PackageReceipt = {
    packageId: fields['package-id'],
    version: fields.version ?? '',
    volume: fields.volume ?? '/',
    location: fields.location ?? ''
  }
  if (fields['install-time'] !== undefined && /^\d+$/.test(fields['install-time'])) receipt.installTime = Number(fields['install-time'])
  return receipt
}

/** Paths of `pkgutil --files ID`, relative to the receipt's volume and location. */
export function parsePkgFiles (output: string): string[] {
  return output.split(/\r?\n/).map(line => line.trim()).filter(line => line !== '' && !line.startsWith('/') && !line.split('/').includes('..'))
}

function decodeEntities (text: string): string {
  return text.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-fA-F]+);/g, (match, entity: string) => {
    switch (entity) {
      case 'lt': return '<'
      case 'gt': return '>'
      case 'amp': return '&'
      case 'quot': return '"'
      case 'apos': return "'"
      default: return String.fromCodePoint(entity.startsWith('#x') ? parseInt(entity.slice(2), 16) : Number(entity.slice(1)))
    }
  })
}

/**
 * The string values at the top level of an XML property list (an app's
 * Info.plist: CFBundleIdentifier, CFBundleShortVersionString, …). Nested
 * dictionaries and arrays are skipped.
 */
export function parsePlistStrings (xml: string): Record<string, string> {
  const out: Record<string, string> = {}
  const body = /<plist[^>]*>\s*<dict>([\s\S]*)<\/dict>\s*<\/plist>/.exec(xml)?.[1]
  if (body === undefined) return out
  const token = /<(\/?)(dict|array|key|string|integer|real|true|false|date|data)(\s*\/)?>/g
  let depth = 0
  let key: string | undefined
  let match: RegExpExecArray | null
  while ((match = token.exec(body)) !== null) {
    const [, closing, tag, selfClosing] = match
    if (tag === 'dict' || tag === 'array') {
      if (selfClosing !== undefined) { key = undefined; continue }
      depth += closing === '/' ? -1 : 1
      if (closing !== '/' && depth === 1) key = undefined
      continue
    }
    if (depth !== 0 || closing === '/' || selfClosing !== undefined) {
      if (depth === 0 && selfClosing !== undefined) key = undefined
      continue
    }
    const end = body.indexOf(`</${tag}>`, token.lastIndex)
    if (end < 0) break
    const text = decodeEntities(body.slice(token.lastIndex, end))
    token.lastIndex = end + tag.length + 3
    if (tag === 'key') {
      key = text
    } else if (key !== undefined) {
      if (tag === 'string') out[key] = text
      key = undefined
    }
  }
  return out
}
