import '../../protocol/polyfill.js'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile, chmod } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { startCoordinator, type RunningCoordinator } from '../../coordinator/main.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { Agent, type AgentInit } from '../../agent/agent.js'
import { silentLogger } from '../../protocol/logger.js'
import { waitFor } from './processes.js'

const SETTLED = new Set(['succeeded', 'succeeded-reboot-pending', 'already-installed', 'not-applicable', 'expired', 'cancelled'])

/**
 * A real coordinator listening on loopback and a real agent, both in this
 * process (no child process to start): the agent's own behaviour is what the
 * tests look at, with its clock and interface list injectable.
 */
export interface AgentLab {
  folder: string
  coordinator: RunningCoordinator
  api: ApiClient
  agent: Agent
  installRoot: string
  /** Writes a file into the lab folder and uploads it as a package. */
  upload: (name: string, content: string | Buffer, metadata: Record<string, unknown>) => Promise<any>
  task: (body: Record<string, unknown>) => Promise<any>
  row: (taskId: string) => Promise<any>
  /** Waits until the device's row of the task satisfies `check` (by default: settled). */
  waitRow: (taskId: string, check?: (row: any) => boolean, what?: string) => Promise<any>
  /** Stops the agent and starts it again on its data folder (a service restart, or a reboot). */
  restartAgent: (extra?: AgentLabInit['agent']) => Promise<void>
  close: () => Promise<void>
}

export interface AgentLabInit {
  now?: () => number
  agent?: Partial<Omit<AgentInit, 'dataDir' | 'coordinatorUrl' | 'logger'>>
}

export function isSettledRow (row: any): boolean {
  return SETTLED.has(row.state) || (row.state === 'failed' && row.final === true)
}

export async function openAgentLab (init: AgentLabInit = {}): Promise<AgentLab> {
  const folder = await mkdtemp(join(tmpdir(), 'md-lab-'))
  const coordinator = await startCoordinator({ dataDir: join(folder, 'coordinator'), port: 0, logger: silentLogger(), chunkSizeBytes: 64 * 1024, ...(init.now !== undefined ? { now: init.now } : {}) })
  const api = new ApiClient({ url: coordinator.url, token: coordinator.services.bootstrapAdminToken! })
  const { token } = await api.post('/v1/enrollment-tokens', {})
  const installRoot = join(folder, 'root')
  await mkdir(installRoot, { recursive: true })
  const startAgent = async (extra: AgentLabInit['agent'] = {}): Promise<Agent> => await Agent.start({
    dataDir: join(folder, 'agent'),
    coordinatorUrl: coordinator.url,
    allowInsecureHttp: true,
    enrollToken: token,
    hostname: 'lab-pc',
    installRoot,
    logger: silentLogger(),
    waitSeconds: 20,
    progressIntervalMs: 200,
    ...(init.now !== undefined ? { now: init.now } : {}),
    ...init.agent,
    ...extra
  })
  const agent = await startAgent()
  const row = async (taskId: string): Promise<any> => (await api.get(`/v1/tasks/${taskId}/devices`)).devices.find((candidate: any) => candidate.deviceId === agent.identity.deviceId)
  const lab: AgentLab = {
    folder,
    coordinator,
    api,
    agent,
    installRoot,
    upload: async (name, content, metadata) => {
      const file = join(folder, name)
      await writeFile(file, content)
      return await api.uploadPackage(file, metadata)
    },
    task: async body => await api.post('/v1/tasks', body),
    row,
    waitRow: async (taskId, check = isSettledRow, what = 'the device to settle') => {
      let seen: any
      try {
        return await waitFor(async () => {
          seen = await row(taskId)
          return seen !== undefined && check(seen) ? seen : undefined
        }, `${what} in task ${taskId}`, 60_000, 50)
      } catch (error) {
        // The row the device last reported tells why it never got there.
        throw new Error(`${(error as Error).message}; the device's row was ${JSON.stringify(seen)}`)
      }
    },
    restartAgent: async extra => {
      await lab.agent.stop()
      lab.agent = await startAgent(extra)
    },
    close: async () => {
      await lab.agent.stop()
      api.close()
      await coordinator.close()
      await rm(folder, { recursive: true, force: true })
    }
  }
  return lab
}

const run = promisify(execFile)

/** Builds a real .deb (no maintainer scripts) that installs files under /opt/NAME. */
export async function buildDeb (folder: string, name: string, version: string, files: Record<string, string>): Promise<string> {
  const tree = join(folder, `${name}-deb`)
  await mkdir(join(tree, 'DEBIAN'), { recursive: true })
  await writeFile(join(tree, 'DEBIAN', 'control'), `Package: ${name}\nVersion: ${version}\nArchitecture: all\nMaintainer: meshdeploy tests <tests@example.org>\nDescription: a package for the tests\n`)
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(tree, path, '..'), { recursive: true })
    await writeFile(join(tree, path), content)
    await chmod(join(tree, path), 0o644)
  }
  const out = join(folder, `${name}_${version}_all.deb`)
  await run('dpkg-deb', ['--root-owner-group', '--build', tree, out])
  return out
}

/** Runs dpkg-query against the private database of an install root. */
export async function dpkgStatus (root: string, name: string): Promise<string> {
  try {
    const { stdout } = await run('dpkg-query', [`--admindir=${join(root, 'var/lib/dpkg')}`, '--show', '--showformat=${Status} ${Version}', name])
    return stdout
  } catch {
    return 'not-installed'
  }
}
