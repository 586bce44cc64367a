import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, type AgentInit } from '../../agent/agent.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { startCoordinator, type RunningCoordinator } from '../../coordinator/main.js'
import { fromBase64, fromUtf8, type Manifest, type SignedEnvelope } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'
import { startTamperProxy, type TamperProxy } from '../helpers/tamper-proxy.js'

/** A real coordinator on loopback with a tampering proxy in front of it, a package, and an enrollment token. */
export interface AgentLab {
  root: string
  coordinator: RunningCoordinator
  proxy: TamperProxy
  api: ApiClient
  enrollToken: string
  packageId: string
  close: () => Promise<void>
}

export const INSTALL_SCRIPT = '#!/bin/sh\necho installed > "$MESHDEPLOY_INSTALL_ROOT/installed"\n'

export async function openAgentLab (): Promise<AgentLab> {
  const root = await mkdtemp(join(tmpdir(), 'md-security-'))
  const coordinator = await startCoordinator({ dataDir: join(root, 'coordinator'), port: 0, logger: silentLogger(), chunkSizeBytes: 64 * 1024 })
  const proxy = await startTamperProxy(coordinator.url)
  const api = new ApiClient({ url: coordinator.url, token: coordinator.services.bootstrapAdminToken! })
  const { token } = await api.post('/v1/enrollment-tokens', { maxUses: 1000 })
  const file = join(root, 'tool.sh')
  await writeFile(file, INSTALL_SCRIPT)
  const pkg = await api.uploadPackage(file, { name: 'tool', version: '1' })
  return {
    root,
    coordinator,
    proxy,
    api,
    enrollToken: token,
    packageId: pkg.id,
    close: async () => {
      api.close()
      await proxy.close()
      await coordinator.close()
      await rm(root, { recursive: true, force: true })
    }
  }
}

export interface LabAgent {
  agent: Agent
  dataDir: string
  installRoot: string
  /** Resolves with the first refusal for a task (or `(key-rotation)`). */
  refusal: (taskId: string, timeoutMs?: number) => Promise<{ reason: string, message: string }>
  stop: () => Promise<void>
}

/** Starts an agent in this process, through the proxy, on a fresh data folder. */
export async function startLabAgent (lab: AgentLab, hostname: string, init: Partial<AgentInit> = {}): Promise<LabAgent> {
  const dataDir = join(lab.root, 'agents', hostname)
  const installRoot = join(dataDir, 'root')
  await mkdir(installRoot, { recursive: true })
  const agent = await Agent.start({
    dataDir,
    coordinatorUrl: lab.proxy.url,
    enrollToken: lab.enrollToken,
    hostname,
    installRoot,
    allowInsecureHttp: true,
    waitSeconds: 1,
    logger: silentLogger(),
    ...init
  })
  const refusals = new Map<string, { reason: string, message: string }>()
  const waiters = new Map<string, (value: { reason: string, message: string }) => void>()
  agent.on('refused', (taskId, reason, message) => {
    if (!refusals.has(taskId)) refusals.set(taskId, { reason, message })
    waiters.get(taskId)?.({ reason, message })
  })
  return {
    agent,
    dataDir,
    installRoot,
    refusal: async (taskId, timeoutMs = 30_000) => {
      const seen = refusals.get(taskId)
      if (seen !== undefined) return seen
      return await new Promise((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`no refusal for ${taskId} within ${timeoutMs} ms`)) }, timeoutMs)
        waiters.set(taskId, value => { clearTimeout(timer); resolve(value) })
      })
    },
    stop: async () => { await agent.stop() }
  }
}

/** Every file under a folder, as relative paths. */
export async function filesUnder (folder: string): Promise<string[]> {
  const out: string[] = []
  let entries
  try {
    entries = await readdir(folder, { withFileTypes: true, recursive: true })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return out
    throw error
  }
  for (const entry of entries) if (entry.isFile()) out.push(join(entry.parentPath, entry.name).slice(folder.length + 1))
  return out.sort()
}

/** Chunks in an agent's cache (the temporary folder aside). */
export async function cachedChunks (dataDir: string): Promise<string[]> {
  return (await filesUnder(join(dataDir, 'cache'))).filter(path => !path.startsWith('tmp'))
}

export async function pinnedKey (dataDir: string): Promise<string> {
  return JSON.parse(await readFile(join(dataDir, 'agent.json'), 'utf8')).coordinatorPublicKey
}

export function decodeManifest (envelope: SignedEnvelope): Manifest {
  return JSON.parse(fromUtf8(fromBase64(envelope.payload))) as Manifest
}

/** Replaces one task's assignment in an answer. */
export function replaceAssignment (answer: any, taskId: string, change: (assignment: any) => any): any {
  return { ...answer, assignments: answer.assignments.map((assignment: any) => assignment.taskId === taskId ? change(assignment) : assignment) }
}

/** Hides every assignment (and rotation), as a quiet channel would. */
export function quiet (answer: any): any {
  return { ...answer, assignments: [], keyRotations: [] }
}
