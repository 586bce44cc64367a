import { Command } from 'commander'
import { readFile, writeFile } from 'node:fs/promises'
import { publisherSignatureSchema, sha256OfFile, signPackageHash, type PublisherSignature } from '../../../protocol/index.js'
import { clientFrom, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { packageFieldsFrom, withPackageOptions } from '../package-options.js'
import { readPublisherKey } from './publishers.js'
import { bar, formatBytes, shortId, table } from '../format.js'
import { downloadPackageFile } from '../download.js'
import { formatCaptureSummary } from './capture.js'
import type { ApiClient } from '../api-client.js'

/** Resolves a package id from a unique prefix, so ids can be typed as the tables show them. */
export async function resolvePackageId (client: ApiClient, prefix: string): Promise<string> {
  if (/^[0-9a-f]{64}$/.test(prefix)) return prefix
  const { packages } = await client.get('/v1/packages')
  const matches = (packages as Array<{ id: string }>).filter(pkg => pkg.id.startsWith(prefix))
  if (matches.length === 1) return matches[0].id
  throw new UsageError(matches.length === 0 ? `no package id starts with ${prefix}` : `${prefix} matches ${matches.length} packages; give more of the id`)
}

/** Package id prefixes in dependencies and supersedence, resolved to whole ids. */
async function resolveRelations (client: ApiClient, fields: Record<string, unknown>): Promise<void> {
  if (Array.isArray(fields.dependsOn)) {
    fields.dependsOn = await Promise.all(fields.dependsOn.map(async (reference: any) => 'packageId' in reference ? { packageId: await resolvePackageId(client, reference.packageId) } : reference))
  }
  if (Array.isArray(fields.supersedes)) {
    fields.supersedes = await Promise.all(fields.supersedes.map(async (entry: any) => ({ ...entry, packageId: await resolvePackageId(client, entry.packageId) })))
  }
}

async function readSignature (file: string): Promise<PublisherSignature> {
  const parsed = publisherSignatureSchema.safeParse(JSON.parse(await readFile(file, 'utf8')))
  if (!parsed.success) throw new UsageError(`${file} is not a signature made by meshdeploy package sign`)
  return parsed.data
}

export function packageCommand (): Command {
  const pkg = new Command('package').description('manage packages')

  withPackageOptions(withApiOptions(pkg.command('add <file>')))
    .description('upload a package file; its kind and platform are detected from its content')
    .requiredOption('--name <name>', 'package name')
    .requiredOption('--version <version>', 'package version')
    .option('--sign-key <file>', 'sign the upload with this publisher key file (meshdeploy publisher keygen)')
    .option('--signature <file>', 'a signature made offline with meshdeploy package sign')
    .addHelpText('after', `
Examples:
  meshdeploy package add ./agent-tools-2.3.tar.gz --name agent-tools --version 2.3 --detect-file /opt/agent-tools/VERSION
  meshdeploy package add ./app-2.0.tar.gz --name app --version 2.0 --detect-file /opt/app/2.0 --depends-on "runtime>=1.4" --supersedes 3f9a0c1b:replace
  meshdeploy package add ./7z2301-x64.msi --name 7-Zip --version 23.01 --detect-registry "7-Zip 23.01 (x64 edition)" --detect-publisher "Igor Pavlov" \\
    --uninstall-msi "{23170F69-40C1-2702-2301-000001000000}" --exit-code 1603=retry --self-service --sign-key ./publisher.key`)
    .action(async (file: string, options) => {
      await run(async () => {
        const metadata: Record<string, unknown> = { name: options.name, version: options.version, ...packageFieldsFrom(options) }
        if (options.signKey !== undefined && options.signature !== undefined) throw new UsageError('give --sign-key or --signature, not both')
        if (options.signKey !== undefined) metadata.publisherSignature = signPackageHash(await sha256OfFile(file), await readPublisherKey(options.signKey))
        if (options.signature !== undefined) metadata.publisherSignature = await readSignature(options.signature)
        const client = clientFrom(options)
        await resolveRelations(client, metadata)
        const showProgress = options.json !== true && process.stderr.isTTY
        let lastDrawn = 0
        const created = await client.uploadPackage(file, metadata, (sent, total) => {
          if (!showProgress || (Date.now() - lastDrawn < 100 && sent < total)) return
          lastDrawn = Date.now()
          const fraction = total === 0 ? 1 : sent / total
          process.stderr.write(`\r\u001b[2Kuploading ${bar(fraction)} ${(fraction * 100).toFixed(0).padStart(3)}%  ${formatBytes(sent)} of ${formatBytes(total)}`)
        })
        if (showProgress) process.stderr.write('\n')
        client.close()
        if (options.json === true) return printJson(created)
        const signed = created.publisherSignature !== undefined ? `, signed by ${created.publisherSignature.publisher}` : ''
        print(`added package ${created.id}\n  ${created.name} ${created.version}, ${created.kind} for ${created.platform}/${created.arch}, ${formatBytes(created.sizeBytes)} in ${created.chunkCount} chunks${signed}`)
      })
    })

  withPackageOptions(withApiOptions(pkg.command('edit <id>')))
    .description('edit a package\'s metadata; unfinished tasks that use it get a new manifest revision')
    .option('--name <name>', 'package name')
    .option('--version <version>', 'package version')
    .option('--no-self-service', 'withdraw from self-service')
    .option('--no-detection', 'remove the detection rule (the install state becomes unknown)')
    .option('--no-uninstall', 'remove the uninstall spec')
    .option('--no-exit-codes', 'remove the exit-code mapping (back to the defaults)')
    .option('--no-depends-on', 'remove every dependency')
    .option('--no-supersedes', 'remove every supersedence')
    .addHelpText('after', '\nExample:\n  meshdeploy package edit 3f9a0c1b --description "Archiver, silent" --detect-registry "7-Zip 23.01 (x64)" --self-service')
    .action(async (id: string, options) => {
      await run(async () => {
        const patch: Record<string, unknown> = packageFieldsFrom(options)
        for (const key of ['name', 'version'] as const) if (options[key] !== undefined) patch[key] = options[key]
        if (options.detection === false) patch.detection = null
        if (options.uninstall === false) patch.uninstall = null
        if (options.exitCodes === false) patch.exitCodes = null
        if (options.dependsOn === false) patch.dependsOn = null
        if (options.supersedes === false) patch.supersedes = null
        if (Object.keys(patch).length === 0) throw new UsageError('name at least one field to change')
        const client = clientFrom(options)
        await resolveRelations(client, patch)
        const updated = await client.patch(`/v1/packages/${await resolvePackageId(client, id)}`, patch)
        client.close()
        if (options.json === true) return printJson(updated)
        print(`package ${updated.id} updated${updated.revisedTasks.length > 0 ? `; ${updated.revisedTasks.length} unfinished task(s) got a new revision: ${updated.revisedTasks.join(', ')}` : ''}`)
      })
    })

  pkg.command('sign <file>')
    .description('sign a package file offline with a publisher key: an ed25519 signature over its SHA-256')
    .requiredOption('--key <file>', 'publisher key file (meshdeploy publisher keygen)')
    .option('--out <file>', 'write the signature here (default: print it)')
    .addHelpText('after', '\nExample:\n  meshdeploy package sign ./tool.msi --key ./publisher.key --out ./tool.msi.sig\n  meshdeploy package add ./tool.msi --name tool --version 1.0 --signature ./tool.msi.sig')
    .action(async (file: string, options) => {
      await run(async () => {
        const signature = signPackageHash(await sha256OfFile(file), await readPublisherKey(options.key))
        const text = JSON.stringify(signature, null, 2) + '\n'
        if (options.out !== undefined) await writeFile(options.out, text)
        else process.stdout.write(text)
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
        print(table(['ID', 'NAME', 'VERSION', 'KIND', 'PLATFORM', 'SIZE', 'SELF-SERVICE', 'SIGNED BY', 'CREATED'], packages.map((p: any) => [shortId(p.id), p.name, p.version, p.kind, `${p.platform}/${p.arch}`, formatBytes(p.sizeBytes), p.selfService === true ? 'yes' : '-', p.publisherSignature?.publisher, p.createdAt])))
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
        const { capture, ...rest } = record
        print(Object.entries(rest).map(([key, value]) => `${key.padEnd(16)} ${typeof value === 'object' ? JSON.stringify(value) : String(value)}`).join('\n'))
        if (capture !== undefined) print(`\ncapture package contents:\n${formatCaptureSummary(capture)}`)
      })
    })

  withApiOptions(pkg.command('switch-tasks <id>'))
    .description('switch the unfinished install tasks of the packages this one supersedes to it, in one call')
    .addHelpText('after', '\nExample:\n  meshdeploy package switch-tasks 7c1e2d3f')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const answer = await client.post(`/v1/packages/${await resolvePackageId(client, id)}/switch-tasks`)
        client.close()
        if (options.json === true) return printJson(answer)
        print(`${answer.message as string}${answer.switchedTasks.length > 0 ? `: ${(answer.switchedTasks as string[]).join(', ')}` : ''}`)
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
  withApiOptions(pkg.command('download <id>'))
    .description('download a package from the coordinator, checking every chunk and the whole file')
    .requiredOption('--out <file>', 'where to write it')
    .addHelpText('after', '\nExample:\n  meshdeploy package download 3f9a0c1b --out ./agent-tools-2.3.tar.gz')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const showProgress = options.json !== true && process.stderr.isTTY
        let lastDrawn = 0
        const downloaded = await downloadPackageFile(client, await resolvePackageId(client, id), options.out, (done, total) => {
          if (!showProgress || (Date.now() - lastDrawn < 100 && done < total)) return
          lastDrawn = Date.now()
          process.stderr.write(`\r\u001b[2Kdownloading ${bar(total === 0 ? 1 : done / total)} ${formatBytes(done)} of ${formatBytes(total)}`)
        })
        if (showProgress) process.stderr.write('\n')
        client.close()
        if (options.json === true) return printJson(downloaded)
        print(`wrote ${downloaded.file} (${formatBytes(downloaded.sizeBytes)}, SHA-256 ${downloaded.sha256})`)
      })
    })
  return pkg
}
