import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import pLimit from 'p-limit'
import { BENCH_DIR, figure, type ScenarioResult } from '../report.js'

const run = promisify(execFile)
const CLI = resolve(BENCH_DIR, '..', 'bin', 'meshdeploy.js')

export interface CaptureScenarioOptions {
  /** Files in the large root. @default 100000 */
  files?: number
  /** Files changed between the snapshots (half modified, a quarter added, a quarter removed). @default 1000 */
  changed?: number
}

interface Measured { wallSeconds: number, cpuSeconds: number, peakRssBytes: number, stdout: string }

/** Runs a command under GNU time: wall clock, CPU (user + system, children included) and peak resident memory. */
async function measure (command: string, args: string[]): Promise<Measured> {
  const { stdout, stderr } = await run('/usr/bin/time', ['-f', 'MEASURED %e %U %S %M', command, ...args], { maxBuffer: 64 * 1024 * 1024 })
  const line = stderr.split('\n').reverse().find(candidate => candidate.startsWith('MEASURED '))
  if (line === undefined) throw new Error(`no measurement from /usr/bin/time: ${stderr.slice(-500)}`)
  const [, wall, user, system, rssKiB] = line.split(' ').map(Number)
  return { wallSeconds: wall, cpuSeconds: user + system, peakRssBytes: rssKiB * 1024, stdout }
}

/** A tree of `files` small files (256 B – 4 KiB of random bytes) in folders of 100 under `root`/data. */
async function buildTree (root: string, files: number): Promise<number> {
  const limit = pLimit(32)
  let bytes = 0
  const folders = Math.ceil(files / 100)
  for (let folder = 0; folder < folders; folder++) await mkdir(join(root, 'data', `d${folder}`), { recursive: true })
  await Promise.all(Array.from({ length: files }, async (_, index) => await limit(async () => {
    const content = randomBytes(256 + (index * 7919) % 3841)
    bytes += content.byteLength
    await writeFile(join(root, 'data', `d${Math.floor(index / 100)}`, `f${index}`), content)
  })))
  return bytes
}

/** Changes `count` files: half rewritten, a quarter added, a quarter removed. Returns the bytes of content added or rewritten. */
async function changeTree (root: string, files: number, count: number): Promise<number> {
  let bytes = 0
  const step = Math.max(1, Math.floor(files / count))
  for (let index = 0; index < count; index++) {
    const target = join(root, 'data', `d${Math.floor((index * step) / 100)}`, `f${index * step}`)
    if (index % 4 < 2) {
      const content = randomBytes(1024)
      bytes += content.byteLength
      await writeFile(target, content)
    } else if (index % 4 === 2) {
      const content = randomBytes(2048)
      bytes += content.byteLength
      await mkdir(join(root, 'data', 'new'), { recursive: true })
      await writeFile(join(root, 'data', 'new', `n${index}`), content)
    } else {
      await rm(target)
    }
  }
  return bytes
}

/**
 * The capture figures: how long `capture start` takes to snapshot a root of
 * 100,000 files and how much memory it holds (against 10,000 files: the
 * walk is streamed, so memory should not grow with the file count), against
 * `find | xargs sha256sum` over the same tree in the same run; how much a
 * second walk (`capture diff`) saves by reusing unchanged files' hashes; and
 * the size of the capture package against the content of the files changed.
 */
export async function captureScenario (options: CaptureScenarioOptions = {}): Promise<ScenarioResult> {
  const files = options.files ?? 100_000
  const changed = options.changed ?? 1000
  const small = Math.max(1000, Math.floor(files / 10))
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const load = loadavg()[0]
  const root = await mkdtemp(join(tmpdir(), 'meshdeploy-bench-capture-'))
  try {
    const large = join(root, 'large')
    const smallRoot = join(root, 'small')
    const treeBytes = await buildTree(large, files)
    await buildTree(smallRoot, small)
    const snapshot = (tree: string, state: string): string[] => [CLI, 'capture', 'start', '--root-dir', tree, '--roots', '/data', '--state', state, '--json']

    const baseline = await measure('sh', ['-c', `find '${join(large, 'data')}' -type f -print0 | xargs -0 sha256sum > /dev/null`])
    const start = await measure('node', snapshot(large, join(root, 'large.state')))
    const startSmall = await measure('node', snapshot(smallRoot, join(root, 'small.state')))
    const startedEntries = JSON.parse(start.stdout) as { entries: number, files: number }
    if (startedEntries.files !== files) throw new Error(`the snapshot saw ${startedEntries.files} files, not ${files}`)
    const stateBytes = (await stat(join(root, 'large.state'))).size

    const changedBytes = await changeTree(large, files, changed)
    const diff = await measure('node', [CLI, 'capture', 'diff', '--state', join(root, 'large.state'), '--json'])
    const diffed = JSON.parse(diff.stdout) as { changes: unknown[] }
    const out = join(root, 'changes.tar.gz')
    const finish = await measure('node', [CLI, 'capture', 'finish', '--state', join(root, 'large.state'), '--name', 'bench', '--version', '1', '--out', out, '--json'])
    const packageBytes = (await stat(out)).size
    const node = await measure('node', ['-e', '0'])
    const cli = await measure('node', [CLI, '--version'])

    const mib = (bytes: number): number => bytes / 2 ** 20
    return {
      scenario: 'capture',
      startedAt,
      durationMs: Date.now() - started,
      parameters: { files, smallFiles: small, changed, treeMiB: Number(mib(treeBytes).toFixed(1)), loadAverageAtStart: Number(load.toFixed(2)), cache: 'warm (the trees were just written)' },
      figures: [
        figure(`capture start, ${files} files`, start.wallSeconds, 's', { atMost: 10 }, `${start.cpuSeconds.toFixed(1)} CPU-s; ${mib(treeBytes).toFixed(0)} MiB hashed`),
        figure('find | xargs sha256sum, same tree', baseline.wallSeconds, 's', undefined, `${baseline.cpuSeconds.toFixed(1)} CPU-s`),
        figure('capture start ÷ find+sha256sum', start.wallSeconds / baseline.wallSeconds, '×', undefined, 'wall time, same run'),
        figure('meshdeploy --version (the CLI loading)', cli.wallSeconds, 's', undefined, `${cli.cpuSeconds.toFixed(1)} CPU-s, part of every capture command`),
        figure(`capture start peak RSS, ${files} files`, mib(start.peakRssBytes), 'MiB', undefined, `node alone: ${mib(node.peakRssBytes).toFixed(0)} MiB`),
        figure(`peak RSS ${files} ÷ ${small} files`, start.peakRssBytes / startSmall.peakRssBytes, '×', { atMost: 1.25 }, 'memory does not grow with the file count'),
        figure('state file', mib(stateBytes), 'MiB', undefined, `${(stateBytes / files).toFixed(0)} B per file`),
        figure(`capture diff after ${changed} changes`, diff.wallSeconds, 's', undefined, `${diff.cpuSeconds.toFixed(1)} CPU-s; ${diffed.changes.length} changes listed`),
        figure('capture diff ÷ capture start', diff.wallSeconds / start.wallSeconds, '×', { atMost: 1 }, 'unchanged files keep their hash (size, mtime, ctime, inode)'),
        figure('capture finish', finish.wallSeconds, 's', undefined, `${finish.cpuSeconds.toFixed(1)} CPU-s; walks again, writes and reads back the package`),
        figure('capture package', packageBytes / 1024, 'KiB', undefined, `${changed} files changed: ${(changedBytes / 1024).toFixed(0)} KiB of random content`),
        figure('package ÷ changed content', packageBytes / changedBytes, '×', { atMost: 1.25 }, 'incompressible content; the rest is tar headers and the change list')
      ],
      raw: { baseline, start, startSmall, diff, finish, node, cli, treeBytes, changedBytes, packageBytes, stateBytes }
    }
  } finally {
    await rm(root, { recursive: true, force: true })
  }
}
