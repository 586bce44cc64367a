import { Command } from 'commander'
import { resolve } from 'node:path'
import type { CaptureChange, CaptureSummary } from '../../../protocol/index.js'
import { DEFAULT_EXCLUDES } from '../../capture/excludes.js'
import { diffCapture, finishCapture, startCapture, summarizeCapturePackage } from '../../capture/package.js'
import { readSnapshot } from '../../capture/snapshot.js'
import { list, print, printJson, run } from '../context.js'
import { formatBytes, formatDuration, table } from '../format.js'

export const CAPTURE_WARNING = 'Everything that changes under the captured roots until `capture finish` goes into the package, including what other programs, updates and users do meanwhile: close other applications and change only what the package should carry.'

function collect (value: string, previous: string[]): string[] {
  return [...previous, value]
}

function mode (value: number | undefined): string {
  return value === undefined ? '-' : value.toString(8).padStart(4, '0')
}

/** How a capture package reads for review: where it was taken, what it changes, where, what it removes and needs. */
export function formatCaptureSummary (summary: CaptureSummary): string {
  const { source, counts } = summary
  const lines = [
    `captured on       ${source.distribution} ${source.distributionVersion} (${source.family} family), ${source.os}/${source.arch}${source.hostname !== undefined ? `, host ${source.hostname}` : ''}`,
    `roots             ${summary.roots.join(', ')}`,
    `changes           ${counts.added} added, ${counts.modified} modified, ${counts.removed} removed, ${counts.metadata} mode/owner only`,
    `file content      ${formatBytes(counts.contentBytes)}`,
    '',
    'top folders:',
    table(['FOLDER', 'CHANGES', 'CONTENT'], summary.topFolders.map(folder => [folder.folder, folder.changes, formatBytes(folder.bytes)]))
  ]
  lines.push('', summary.removalsTotal === 0 ? 'removals: none' : `removals (${summary.removalsTotal}):`)
  for (const path of summary.removals) lines.push(`  ${path}`)
  if (summary.removalsTotal > summary.removals.length) lines.push(`  … and ${summary.removalsTotal - summary.removals.length} more`)
  lines.push('', summary.requiredPackagesTotal === 0 ? 'system packages needed: none' : `system packages needed (${summary.requiredPackagesTotal}; a device without them refuses the package):`)
  for (const pkg of summary.requiredPackages) lines.push(`  ${pkg.name} ${pkg.version}${pkg.arch !== undefined ? ` (${pkg.arch})` : ''}`)
  if (summary.requiredPackagesTotal > summary.requiredPackages.length) lines.push(`  … and ${summary.requiredPackagesTotal - summary.requiredPackages.length} more`)
  return lines.join('\n')
}

const LETTER: Record<CaptureChange['op'], string> = { add: 'A', modify: 'M', remove: 'D', metadata: 'P' }

function describeChange (change: CaptureChange): string {
  const what = change.type === 'symlink' ? `link -> ${change.target ?? '?'}` : change.type === 'dir' ? 'folder' : change.size !== undefined ? formatBytes(change.size) : 'file'
  const owner = change.user !== undefined || change.group !== undefined ? ` ${change.user ?? change.uid}:${change.group ?? change.gid}` : ''
  if (change.op === 'remove') return `D ${change.path}`
  if (change.op === 'metadata') return `P ${change.path}  mode ${mode(change.mode)}${owner}`
  return `${LETTER[change.op]} ${change.path}  (${what}, mode ${mode(change.mode)}${owner})`
}

export function captureCommand (): Command {
  const capture = new Command('capture').description('package what an install changes on a reference machine: snapshot, install, diff, finish (runs without a coordinator)')

  capture.command('start')
    .description('snapshot the roots (path, type, mode, owner, size, SHA-256, link target) and the installed system packages')
    .requiredOption('--state <file>', 'where to write the snapshot (gzip-compressed JSON lines)')
    .option('--roots <list>', 'comma-separated folders to capture', list, ['/opt', '/etc', '/usr/local'])
    .option('--exclude <glob>', 'leave out paths matching this glob (repeatable): with a slash, the whole path; without, any name', collect, [])
    .option('--no-default-excludes', 'capture temporary, log, cache and machine-identity paths too')
    .option('--root-dir <dir>', 'the system to capture lives under this folder (a mounted image or container root)', '/')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `\n${CAPTURE_WARNING}\n\nDefault excludes: ${DEFAULT_EXCLUDES.join(' ')}\n\nExample:\n  meshdeploy capture start --roots /opt,/etc,/usr/local --state /root/app.capture\n  (install the application)\n  meshdeploy capture diff --state /root/app.capture\n  meshdeploy capture finish --state /root/app.capture --name app --version 1.0 --out /root/app-1.0.capture.tar.gz`)
    .action(async options => {
      await run(async () => {
        const rootDir = resolve(options.rootDir)
        const statePath = resolve(options.state)
        if (options.json !== true) process.stderr.write(`warning: ${CAPTURE_WARNING}\n`)
        const started = performance.now()
        const excludes = [...(options.defaultExcludes === false ? [] : DEFAULT_EXCLUDES), ...options.exclude]
        const { header, totals } = await startCapture({ statePath, rootDir, roots: options.roots, excludes })
        const { source, roots } = header
        const elapsedMs = performance.now() - started
        if (options.json === true) return printJson({ state: statePath, roots, source, packages: header.packages.length, ...totals, elapsedMs: Math.round(elapsedMs) })
        print(`snapshot of ${totals.entries} entries (${totals.files} files, ${formatBytes(totals.bytes)} hashed) and ${source.packageManager === 'none' ? 'no package database' : `${header.packages.length} ${source.packageManager} packages`} in ${formatDuration(elapsedMs)}: ${statePath}`)
        print(`now install or change what the package should carry, then: meshdeploy capture diff --state ${options.state}`)
      })
    })

  capture.command('diff')
    .description('list what changed since capture start: added, modified, removed files, mode and owner changes, system packages')
    .requiredOption('--state <file>', 'the snapshot written by capture start')
    .option('--json', 'print the changes as JSON')
    .addHelpText('after', '\nLetters: A added, M modified, D removed, P mode or owner only.\n\nExample:\n  meshdeploy capture diff --state /root/app.capture')
    .action(async options => {
      await run(async () => {
        const statePath = resolve(options.state)
        const snapshot = await readSnapshot(statePath)
        const diff = await diffCapture(snapshot, { excludes: snapshot.header.rootDir === '/' ? [statePath] : [] })
        const changes: CaptureChange[] = []
        const counts = { add: 0, modify: 0, remove: 0, metadata: 0 }
        for await (const change of diff.changes) {
          counts[change.op]++
          if (options.json === true) changes.push(change)
          else print(describeChange(change))
        }
        if (options.json === true) return printJson({ changes, packages: diff.packages, requiredPackages: diff.required })
        for (const pkg of diff.packages.added) print(`package added     ${pkg.name} ${pkg.version} (${pkg.arch})`)
        for (const pkg of diff.packages.upgraded) print(`package upgraded  ${pkg.name} ${pkg.from} -> ${pkg.to}`)
        for (const pkg of diff.packages.removed) print(`package removed   ${pkg.name} ${pkg.version} (not carried by the package; devices keep theirs)`)
        print(`${counts.add} added, ${counts.modify} modified, ${counts.remove} removed, ${counts.metadata} mode/owner only; ${diff.packages.added.length + diff.packages.upgraded.length} system package(s) needed`)
        if (counts.add + counts.modify + counts.remove + counts.metadata === 0) print(`nothing changed under ${snapshot.header.roots.join(', ')}`)
      })
    })

  capture.command('finish')
    .description('write a capture package of what changed since capture start, to upload with meshdeploy package add')
    .requiredOption('--state <file>', 'the snapshot written by capture start')
    .requiredOption('--name <name>', 'package name')
    .requiredOption('--version <version>', 'package version')
    .requiredOption('--out <file>', 'where to write the package (.tar.gz)')
    .option('--json', 'print the summary as JSON')
    .addHelpText('after', '\nExample:\n  meshdeploy capture finish --state /root/app.capture --name app --version 1.0 --out app-1.0.capture.tar.gz\n  meshdeploy package add app-1.0.capture.tar.gz --name app --version 1.0 --sign-key publisher.key')
    .action(async options => {
      await run(async () => {
        const started = performance.now()
        const result = await finishCapture({ statePath: resolve(options.state), name: options.name, version: options.version, out: resolve(options.out) })
        if (options.json === true) return printJson({ out: resolve(options.out), packageBytes: result.packageBytes, summary: result.summary })
        print(`wrote ${options.out}: ${formatBytes(result.packageBytes)} in ${formatDuration(performance.now() - started)}\n`)
        print(formatCaptureSummary(result.summary))
        for (const pkg of result.packages.removed) print(`note: system package ${pkg.name} was removed on this machine; the capture package does not remove it on devices`)
      })
    })

  capture.command('show <file>')
    .description('check a capture package file and show what it changes: counts, top folders, removals, system packages needed')
    .option('--json', 'print the summary as JSON')
    .action(async (file: string, options) => {
      await run(async () => {
        const summary = await summarizeCapturePackage(file)
        if (options.json === true) return printJson(summary)
        print(formatCaptureSummary(summary))
      })
    })
  return capture
}
