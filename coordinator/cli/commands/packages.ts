import { Command } from 'commander'
import { clientFrom, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { formatBytes, shortId, table } from '../format.js'
import type { ApiClient } from '../api-client.js'

/** Resolves a package id from a unique prefix, so ids can be typed as the tables show them. */
export async function resolvePackageId (client: ApiClient, prefix: string): Promise<string> {
  if (/^[0-9a-f]{64}$/.test(prefix)) return prefix
  const { packages } = await client.get('/v1/packages')
  const matches = (packages as Array<{ id: string }>).filter(pkg => pkg.id.startsWith(prefix))
  if (matches.length === 1) return matches[0].id
  throw new UsageError(matches.length === 0 ? `no package id starts with ${prefix}` : `${prefix} matches ${matches.length} packages; give more of the id`)
}

export function packageCommand (): Command {
  const pkg = new Command('package').description('manage packages')

  withApiOptions(pkg.command('add <file>'))
    .description('upload a package file')
    .requiredOption('--name <name>', 'package name')
    .requiredOption('--version <version>', 'package version')
    .option('--description <text>', 'description (remarks)')
    .option('--publisher <name>', 'publisher')
    .option('--kind <kind>', 'override the detected kind (msi, exe, shell, tar.gz, …)')
    .option('--detect-file <path>', 'detection rule: this absolute path exists')
    .option('--detect-sha256 <hex>', 'with --detect-file: and has this SHA-256')
    .option('--detect-command <command...>', 'detection rule: this command exits 0')
    .addHelpText('after', '\nExample:\n  meshdeploy package add ./agent-tools-2.3.tar.gz --name agent-tools --version 2.3 --detect-file /opt/agent-tools/VERSION')
    .action(async (file: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const metadata: Record<string, unknown> = { name: options.name, version: options.version }
        for (const key of ['description', 'publisher', 'kind'] as const) if (options[key] !== undefined) metadata[key] = options[key]
        if (options.detectFile !== undefined) metadata.detection = { type: 'file', path: options.detectFile, ...(options.detectSha256 !== undefined ? { sha256: options.detectSha256 } : {}) }
        else if (options.detectCommand !== undefined) metadata.detection = { type: 'command', command: options.detectCommand }
        const showProgress = options.json !== true && process.stderr.isTTY
        let lastDrawn = 0
        const created = await client.uploadPackage(file, metadata, (sent, total) => {
          if (!showProgress || (Date.now() - lastDrawn < 100 && sent < total)) return
          lastDrawn = Date.now()
          const fraction = total === 0 ? 1 : sent / total
          process.stderr.write(`\r\u001b[2Kuploading ${(fraction * 100).toFixed(0).padStart(3)}%  ${formatBytes(sent)} of ${formatBytes(total)}`)
        })
        if (showProgress) process.stderr.write('\n')
        client.close()
        if (options.json === true) return printJson(created)
        print(`added package ${created.id}\n  ${created.name} ${created.version}, ${created.kind} for ${created.platform}, ${formatBytes(created.sizeBytes)} in ${created.chunkCount} chunks`)
      })
    })

  withApiOptions(pkg.command('list'))
    .description('list packages')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { packages } = await client.get('/v1/packages')
        client.close()
        if (options.json === true) return printJson(packages)
        print(table(['ID', 'NAME', 'VERSION', 'KIND', 'PLATFORM', 'SIZE', 'CREATED'], packages.map((p: any) => [shortId(p.id), p.name, p.version, p.kind, p.platform, formatBytes(p.sizeBytes), p.createdAt])))
      })
    })

  withApiOptions(pkg.command('show <id>'))
    .description('show a package')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const record = await client.get(`/v1/packages/${await resolvePackageId(client, id)}`)
        client.close()
        if (options.json === true) return printJson(record)
        print(Object.entries(record).map(([key, value]) => `${key.padEnd(16)} ${typeof value === 'object' ? JSON.stringify(value) : String(value)}`).join('\n'))
      })
    })

  withApiOptions(pkg.command('rm <id>'))
    .description('delete a package; unfinished tasks that use it are cancelled')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const answer = await client.delete(`/v1/packages/${await resolvePackageId(client, id)}`)
        client.close()
        if (options.json === true) return printJson(answer)
        print(answer.message)
      })
    })
  return pkg
}
