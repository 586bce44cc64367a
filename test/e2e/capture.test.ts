import '../../protocol/polyfill.js'
import test from 'ava'
import { execFile } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { startCoordinator } from '../../coordinator/main.js'
import { ApiClient, ApiRequestError } from '../../coordinator/cli/api-client.js'
import { finishCapture } from '../../coordinator/capture/package.js'
import { Agent } from '../../agent/agent.js'
import { silentLogger } from '../../protocol/logger.js'
import { isSettledRow } from '../helpers/agent-lab.js'
import { waitFor } from '../helpers/processes.js'
import { tempFolder } from '../helpers/temp.js'
import { captureTool, installOnReference, startCapture, treeState, withSource, writeBeforeTree } from '../helpers/capture.js'

const run = promisify(execFile)
const CLI = join(import.meta.dirname, '..', '..', 'bin', 'meshdeploy.js')

test('a capture package uploads as kind capture, deploys to two agents as the reference tree, and uninstalls back to the tree before', async t => {
  const folder = await tempFolder(t, 'md-capture-e2e-')
  const tool = await captureTool(folder)
  const coordinator = await startCoordinator({ dataDir: join(folder, 'coordinator'), port: 0, logger: silentLogger(), chunkSizeBytes: 64 * 1024 })
  const api = new ApiClient({ url: coordinator.url, token: coordinator.services.bootstrapAdminToken! })
  const agents: Agent[] = []
  t.teardown(async () => {
    for (const agent of agents) await agent.stop()
    api.close()
    await coordinator.close()
  })
  const { token } = await api.post('/v1/enrollment-tokens', {})
  const roots: string[] = []
  for (const name of ['pc-1', 'pc-2']) {
    const installRoot = join(folder, name, 'root')
    await writeBeforeTree(installRoot)
    roots.push(installRoot)
    agents.push(await Agent.start({ dataDir: join(folder, name, 'data'), coordinatorUrl: coordinator.url, allowInsecureHttp: true, enrollToken: token, hostname: name, site: 'hq', installRoot, logger: silentLogger(), waitSeconds: 20, progressIntervalMs: 200 }))
  }
  const before = await treeState(roots[0])

  const pkg = await api.uploadPackage(tool.packageFile, { name: 'tool', version: '2.0' })
  t.is(pkg.kind, 'capture', 'the kind comes from the package\'s own header')
  t.is(pkg.platform, 'linux')
  t.deepEqual(pkg.uninstall, { type: 'capture' }, 'uninstalling applies the undo journal')
  t.like(pkg.capture.counts, { added: 6, modified: 1, removed: 1, metadata: 1 })
  t.deepEqual(pkg.capture.removals, ['/etc/tool/unused.conf'])
  t.is(pkg.capture.topFolders[0].folder, '/opt/tool')

  const rowsOf = async (taskId: string): Promise<any[]> => await waitFor(async () => {
    const rows = (await api.get(`/v1/tasks/${taskId}/devices`)).devices as any[]
    return rows.length === 2 && rows.every(isSettledRow) ? rows : undefined
  }, `task ${taskId} to settle`, 60_000, 100)

  const install = await api.post('/v1/tasks', { packageId: pkg.id, action: 'install', targets: { sites: ['hq'] }, maxAttempts: 1 })
  const installed = await rowsOf(install.id)
  t.deepEqual(installed.map(row => row.state), ['succeeded', 'succeeded'], installed.map(row => row.message).join(' | '))
  const expected = await treeState(tool.reference)
  delete expected['/opt/tool/.notes.swp']
  for (const root of roots) t.deepEqual(await treeState(root), expected, `${root} is the reference's tree`)

  const uninstall = await api.post('/v1/tasks', { packageId: pkg.id, action: 'uninstall', targets: { sites: ['hq'] }, maxAttempts: 1 })
  const removed = await rowsOf(uninstall.id)
  t.deepEqual(removed.map(row => row.state), ['succeeded', 'succeeded'], removed.map(row => row.message).join(' | '))
  for (const root of roots) t.deepEqual(await treeState(root), before, `${root} is back as before`)

  // Captured on another distribution: refused by the agent after reading the header; on another architecture: refused before the download.
  const other = join(folder, 'other')
  await writeBeforeTree(other)
  await startCapture(other, join(folder, 'other.state'))
  await installOnReference(other)
  const packages: any[] = []
  for (const [index, source] of [{ distribution: 'rocky', family: 'rhel', distributionVersion: '9' }, { arch: process.arch === 'arm64' ? 'x64' : 'arm64' }].entries()) {
    await withSource(join(folder, 'other.state'), join(folder, `other-${index}.state`), source as any)
    const out = join(folder, `other-${index}.tar.gz`)
    await finishCapture({ statePath: join(folder, `other-${index}.state`), name: 'tool', version: `other-${index}`, out })
    packages.push(await api.uploadPackage(out, { name: 'tool', version: `other-${index}` }))
  }
  t.is(packages[1].arch, process.arch === 'arm64' ? 'x64' : 'arm64', 'the architecture comes from the header')
  for (const [index, reason] of [/captured on rocky 9 \(rhel family\)/, /is built for (arm64|x64)/].entries()) {
    const task = await api.post('/v1/tasks', { packageId: packages[index].id, action: 'install', targets: { deviceIds: [agents[0].identity.deviceId] }, maxAttempts: 1 })
    const row = await waitFor(async () => {
      const found = (await api.get(`/v1/tasks/${task.id}/devices`)).devices[0]
      return found !== undefined && isSettledRow(found) ? found : undefined
    }, 'the refusal', 60_000, 100)
    t.is(row.state, 'not-applicable')
    t.regex(row.message, reason)
  }
  t.deepEqual(await treeState(roots[0]), before, 'nothing written by the refused packages')

  // A package that claims to be a capture but breaks the format is refused whole.
  const broken = join(folder, 'broken.tar.gz')
  const bytes = await readFile(tool.packageFile)
  await writeFile(broken, bytes.subarray(0, bytes.byteLength - 200))
  const error = await t.throwsAsync(api.uploadPackage(broken, { name: 'tool', version: 'broken' }))
  t.true(error instanceof ApiRequestError && error.status === 400, String(error))
  t.regex(error!.message, /not a well-formed capture package/)
  t.is((await api.get('/v1/packages')).packages.filter((p: any) => p.version === 'broken').length, 0)
})

test('the capture commands run on a reference machine without a coordinator: start, diff, finish, show', async t => {
  const folder = await tempFolder(t, 'md-capture-cli-')
  const reference = join(folder, 'reference')
  await writeBeforeTree(reference)
  const state = join(folder, 'tool.state')
  const env = { ...process.env, MESHDEPLOY_URL: 'http://127.0.0.1:9' }
  const started = await run('node', [CLI, 'capture', 'start', '--root-dir', reference, '--roots', '/opt,/etc', '--state', state], { env })
  t.regex(started.stderr, /warning: Everything that changes under the captured roots/)
  t.regex(started.stdout, /snapshot of \d+ entries \(5 files/)
  await installOnReference(reference)
  await mkdir(join(reference, 'var/log'), { recursive: true })
  const diff = JSON.parse((await run('node', [CLI, 'capture', 'diff', '--state', state, '--json'], { env })).stdout)
  t.deepEqual(diff.changes.map((change: any) => `${change.op} ${change.path}`).slice(0, 3), ['modify /etc/tool/tool.conf', 'remove /etc/tool/unused.conf', 'add /opt/tool/VERSION'])
  const out = join(folder, 'tool.tar.gz')
  const finished = await run('node', [CLI, 'capture', 'finish', '--state', state, '--name', 'tool', '--version', '2.0', '--out', out], { env })
  t.regex(finished.stdout, /6 added, 1 modified, 1 removed, 1 mode\/owner only/)
  t.regex(finished.stdout, /removals \(1\):\n {2}\/etc\/tool\/unused\.conf/)
  const shown = JSON.parse((await run('node', [CLI, 'capture', 'show', out, '--json'], { env })).stdout)
  t.is(shown.counts.added, 6)
  const refused = await t.throwsAsync(run('node', [CLI, 'capture', 'finish', '--state', join(folder, 'missing.state'), '--name', 'x', '--version', '1', '--out', join(folder, 'x.tar.gz')], { env }))
  t.regex(String((refused as any).stderr), /error: /)
})
