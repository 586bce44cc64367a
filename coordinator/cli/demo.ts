import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { create as createTar } from 'tar'
import { ApiClient } from './api-client.js'
import { formatBytes, formatDuration, table } from './format.js'
import { watchTask } from './watch.js'
import { sha256OfFile } from '../../protocol/index.js'

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bin/meshdeploy.js')

export interface DemoOptions {
  /** @default 6 */
  agents?: number
  /** @default 2 */
  sites?: number
  /** Size of the sample package's payload. @default 32 */
  payloadMiB?: number
  /** Keep the temporary folder for inspection. @default false */
  keep?: boolean
  /** Give up after this long. @default 600000 */
  timeoutMs?: number
  output?: NodeJS.WriteStream
}

interface Started {
  child: ChildProcess
  event: Record<string, unknown>
}

/** Starts `meshdeploy …` as a child process and waits for its start event on stdout. */
async function startProcess (args: string[], logFile: string, expectedEvent: string, timeoutMs = 30_000): Promise<Started> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const log = createWriteStream(logFile)
  child.stderr?.pipe(log)
  const lines = createInterface({ input: child.stdout! })
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${args.slice(0, 2).join(' ')} did not start within ${timeoutMs} ms; see ${logFile}`)) }, timeoutMs)
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`${args.slice(0, 2).join(' ')} exited with ${code}; see ${logFile}`)) })
    lines.on('line', line => {
      log.write(line + '\n')
      try {
        const event = JSON.parse(line) as Record<string, unknown>
        if (event.event === expectedEvent) {
          clearTimeout(timer)
          child.removeAllListeners('exit')
          resolve({ child, event })
        }
      } catch {}
    })
  })
}

async function stopProcess (child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>(resolve => { child.once('exit', () => { resolve() }) })
  child.kill('SIGTERM')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
  await exited
  clearTimeout(timer)
}

const INSTALL_SCRIPT = `#!/bin/sh
# Installs the meshdeploy demo payload under the agent's install root.
set -eu
dest="$MESHDEPLOY_INSTALL_ROOT/opt/meshdeploy-demo"
mkdir -p "$dest"
cp payload.bin "$dest/.payload.bin.partial"
mv "$dest/.payload.bin.partial" "$dest/payload.bin"
cp VERSION "$dest/VERSION"
echo "installed meshdeploy-demo $(cat VERSION) into $dest"
`

/** Builds the sample package: a tar.gz with an install script and an incompressible payload. */
export async function buildSamplePackage (folder: string, payloadMiB: number): Promise<{ file: string, payloadSha256: string, version: string }> {
  const source = join(folder, 'source')
  await mkdir(source, { recursive: true })
  const version = '1.0.0'
  const payload = createWriteStream(join(source, 'payload.bin'))
  const hash = createHash('sha256')
  for (let written = 0; written < payloadMiB; written++) {
    const block = randomBytes(1024 * 1024)
    hash.update(block)
    if (!payload.write(block)) await new Promise<void>(resolve => payload.once('drain', () => { resolve() }))
  }
  await new Promise<void>((resolve, reject) => { payload.end((error?: Error | null) => { if (error != null) reject(error); else resolve() }) })
  await writeFile(join(source, 'install.sh'), INSTALL_SCRIPT, { mode: 0o755 })
  await writeFile(join(source, 'VERSION'), version + '\n')
  const file = join(folder, `meshdeploy-demo-${version}.tar.gz`)
  await createTar({ gzip: { level: 1 }, file, cwd: source, portable: true }, ['install.sh', 'VERSION', 'payload.bin'])
  return { file, payloadSha256: hash.digest('hex'), version }
}

/**
 * The main job on loopback: a coordinator and agents as separate processes
 * in two sites, a real package uploaded and installed everywhere, with live
 * progress and a check of the installed files.
 */
export async function runDemo (options: DemoOptions = {}): Promise<number> {
  const out = options.output ?? process.stdout
  const say = (text: string): void => { out.write(text + '\n') }
  const agentCount = options.agents ?? 6
  const siteCount = options.sites ?? 2
  const payloadMiB = options.payloadMiB ?? 32
  const started = Date.now()
  const root = await mkdtemp(join(tmpdir(), 'meshdeploy-demo-'))
  const children: ChildProcess[] = []
  let client: ApiClient | undefined
  const interrupted = new AbortController()
  const onSignal = (): void => { interrupted.abort(new Error('interrupted')) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    say(`meshdeploy demo — working in ${root}`)
    const coordinator = await startProcess(['coordinator', 'start', '--data', join(root, 'coordinator'), '--port', '0', '--log-level', 'warn'], join(root, 'coordinator.log'), 'coordinator-started')
    children.push(coordinator.child)
    const url = coordinator.event.url as string
    const adminToken = (await readFile(join(root, 'coordinator', 'admin-token'), 'utf8')).trim()
    client = new ApiClient({ url, token: adminToken })
    say(`coordinator listening on ${url} (admin token in ${join(root, 'coordinator', 'admin-token')})`)

    const { token: enrollToken } = await client.post('/v1/enrollment-tokens', { maxUses: agentCount, expiresInSeconds: 3600 })
    const sites = Array.from({ length: siteCount }, (_, index) => `site-${String.fromCharCode(97 + index)}`)
    const agentDirs: string[] = []
    await Promise.all(Array.from({ length: agentCount }, async (_, index) => {
      const site = sites[index % siteCount]
      const hostname = `${site}-agent-${Math.floor(index / siteCount) + 1}`
      const data = join(root, 'agents', hostname)
      agentDirs.push(data)
      await mkdir(join(data, 'root'), { recursive: true })
      const agent = await startProcess([
        'agent', 'start', '--data', data, '--coordinator', url, '--enroll-token', enrollToken, '--insecure-http',
        '--site', site, '--hostname', hostname, '--install-root', join(data, 'root'), '--log-level', 'warn'
      ], join(root, `${hostname}.log`), 'agent-started')
      children.push(agent.child)
    }))
    say(`${agentCount} agents enrolled in ${siteCount} sites (${sites.join(', ')})`)

    const sample = await buildSamplePackage(join(root, 'package'), payloadMiB)
    const size = (await stat(sample.file)).size
    say(`built ${sample.file.split('/').pop()} (${formatBytes(size)}: install.sh, VERSION, ${payloadMiB} MiB payload)`)
    let lastShown = -1
    const pkg = await client.uploadPackage(sample.file, {
      name: 'meshdeploy-demo',
      version: sample.version,
      description: 'sample package of the meshdeploy demo',
      detection: { type: 'file', path: '/opt/meshdeploy-demo/payload.bin', sha256: sample.payloadSha256 }
    }, (sent, total) => {
      const percent = Math.floor(100 * sent / total / 25) * 25
      if (percent !== lastShown) { lastShown = percent; say(`  upload ${percent}%`) }
    })
    say(`uploaded package ${pkg.id.slice(0, 12)}: ${pkg.kind}, ${pkg.chunkCount} chunks of ${formatBytes(pkg.chunkSizeBytes)}`)

    const originBefore = (await client.get('/v1/stats')).origin.bytesServed as number
    const taskStarted = Date.now()
    const task = await client.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { all: true }, name: 'demo install', maxAttempts: 1 })
    say(`created task ${task.id} for ${task.resolvedDevices} devices\n`)
    const final = await watchTask(client, task.id, { intervalMs: 250, timeoutMs: options.timeoutMs ?? 600_000, signal: interrupted.signal, output: out })
    const taskMs = Date.now() - taskStarted
    const originBytes = ((await client.get('/v1/stats')).origin.bytesServed as number) - originBefore

    const results = await Promise.all(final.devices.map(async row => {
      const dir = agentDirs.find(candidate => candidate.endsWith(`/${row.hostname}`))
      let installed = 'missing'
      if (dir !== undefined) {
        try {
          installed = await sha256OfFile(join(dir, 'root', 'opt', 'meshdeploy-demo', 'payload.bin')) === sample.payloadSha256 ? 'matches' : 'differs'
        } catch {}
      }
      return { row, installed }
    }))
    say('\nper-device results')
    say(table(['DEVICE', 'SITE', 'STATE', 'FROM PEERS', 'FROM ORIGIN', 'EXIT', 'INSTALLED FILES'], results.map(({ row, installed }) => [
      row.hostname, row.site, row.state, formatBytes(row.bytesFromPeers), formatBytes(row.bytesFromOrigin), row.exitCode, installed
    ])))
    const progress = final.task.progress
    const allGood = results.length === agentCount && results.every(({ row, installed }) => row.state === 'succeeded' && installed === 'matches')
    say('summary')
    say(`  wall time            ${formatDuration(Date.now() - started)} in all, ${formatDuration(taskMs)} from task creation to the last device`)
    say(`  package              ${formatBytes(pkg.sizeBytes)}; ${agentCount} devices need ${formatBytes(pkg.sizeBytes * agentCount)}`)
    say(`  served by the origin ${formatBytes(originBytes)} (${(originBytes / pkg.sizeBytes).toFixed(2)} × the package)`)
    say(`  from peers           ${formatBytes(progress.bytesFromPeers)} (${(progress.peerShare * 100).toFixed(0)}% of what devices received)`)
    say(`  devices              ${progress.succeeded} succeeded, ${progress.failed} failed of ${progress.total}`)
    say(allGood ? '\nevery device succeeded and its installed files match the package' : '\nthe demo FAILED: not every device succeeded with matching files')
    return allGood ? 0 : 1
  } catch (error) {
    say(`\nthe demo failed: ${(error as Error).message}`)
    say(`logs are kept in ${root}`)
    options.keep = true
    return 1
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    client?.close()
    await Promise.all(children.reverse().map(async child => { await stopProcess(child) }))
    if (options.keep !== true) await rm(root, { recursive: true, force: true })
  }
}
