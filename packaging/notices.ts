import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/** Where a Node.js binary's own licence is found: beside its installation, or in Debian's documentation folder. */
function nodeLicenseCandidates (nodeBinary: string): string[] {
  const prefix = dirname(dirname(nodeBinary))
  return [join(prefix, 'share/doc/node/LICENSE'), join(prefix, 'share/doc/nodejs/LICENSE'), '/usr/share/doc/nodejs/LICENSE', '/usr/share/doc/nodejs/copyright']
}

async function licenseText (folder: string): Promise<string | undefined> {
  const names = await readdir(folder).catch(() => [] as string[])
  const file = names.find(name => /^(licen[cs]e|copying)(\.(md|txt|markdown))?$/i.test(name)) ?? names.find(name => /^licen[cs]e/i.test(name))
  return file !== undefined ? (await readFile(join(folder, file), 'utf8')).trim() : undefined
}

/**
 * The licences of what the agent executable carries: Node.js itself and
 * every npm package bundled into it, each with its licence text where the
 * package ships one.
 */
export async function thirdPartyNotices (init: { packageFolders: readonly string[], nodeBinary: string, nodeVersion: string, projectLicense: string }): Promise<string> {
  const sections: string[] = [
    `meshdeploy agent — ${init.projectLicense}. The executable carries the following third-party software.`
  ]
  const nodeLicense = nodeLicenseCandidates(init.nodeBinary).find(path => existsSync(path))
  sections.push(`Node.js ${init.nodeVersion} (MIT and the licences of its dependencies)\n${nodeLicense !== undefined ? (await readFile(nodeLicense, 'utf8')).trim() : `https://github.com/nodejs/node/blob/${init.nodeVersion}/LICENSE`}`)
  const seen = new Set<string>()
  for (const folder of init.packageFolders) {
    let manifest: { name?: string, version?: string, license?: unknown, licenses?: Array<{ type?: string }> }
    try {
      manifest = JSON.parse(await readFile(join(folder, 'package.json'), 'utf8'))
    } catch {
      continue
    }
    const name = manifest.name ?? basename(folder)
    const key = `${name}@${manifest.version ?? ''}`
    if (seen.has(key)) continue
    seen.add(key)
    const license = typeof manifest.license === 'string' ? manifest.license : manifest.licenses?.map(entry => entry.type).join(' OR ') ?? 'see the package'
    sections.push(`${key} (${license})\n${await licenseText(folder) ?? '(the package ships no licence file)'}`)
  }
  return sections.join('\n\n' + '-'.repeat(72) + '\n\n') + '\n'
}
