import { randomBytes } from 'node:crypto'
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startAgentProcess, waitFor, type AgentOptions, type AgentProcess, type CoordinatorProcess } from './processes.js'

export const SETTLED = new Set(['succeeded', 'already-installed', 'not-applicable', 'cancelled', 'expired'])

export function isSettledRow (row: any): boolean {
  return SETTLED.has(row.state) || (row.state === 'failed' && row.final === true)
}

/** The task's device rows once `count` of them satisfy `check` (by default: settled). */
export async function rowsWhen (coordinator: { api: CoordinatorProcess['api'] }, taskId: string, count: number, what: string, check: (row: any) => boolean = isSettledRow, timeoutMs = 120_000): Promise<any[]> {
  return await waitFor(async () => {
    const { devices } = await coordinator.api.get(`/v1/tasks/${taskId}/devices`)
    return devices.length === count && devices.every(check) ? devices : undefined
  }, what, timeoutMs, 250)
}

/** Starts `count` agents of one site on loopback, with one enrollment token. */
export async function startSite (coordinator: CoordinatorProcess, count: number, prefix: string, extra: Partial<AgentOptions> = {}): Promise<AgentProcess[]> {
  const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: count })
  return await Promise.all(Array.from({ length: count }, async (_, index) => await startAgentProcess({
    coordinatorUrl: coordinator.url, enrollToken: token, hostname: `${prefix}-${index + 1}`, site: 'branch', ...extra
  })))
}

/** Waits until every agent reports that it is connected to the others. */
export async function meshFormed (coordinator: CoordinatorProcess, agents: AgentProcess[]): Promise<void> {
  await waitFor(async () => {
    const { devices } = await coordinator.api.get('/v1/devices')
    const ours = devices.filter((device: any) => agents.some(agent => agent.deviceId === device.id))
    return ours.length === agents.length && ours.every((device: any) => device.connectedPeers >= agents.length - 1) ? true : undefined
  }, 'the site peers to connect', 60_000, 250)
}

/** The device that says it is its site's status relay, once exactly one of `agents` says so. */
export async function relayOf (coordinator: CoordinatorProcess, agents: AgentProcess[], timeoutMs = 60_000): Promise<AgentProcess> {
  return await waitFor(async () => {
    const { devices } = await coordinator.api.get('/v1/devices')
    const relays = devices.filter((device: any) => device.statusRelay === true && agents.some(agent => agent.deviceId === device.id))
    return relays.length === 1 ? agents.find(agent => agent.deviceId === relays[0].id) : undefined
  }, 'exactly one status relay in the site', timeoutMs, 250)
}

export async function uploadRandom (coordinator: CoordinatorProcess, folder: string, name: string, bytes: number): Promise<any> {
  const file = join(folder, name)
  await writeFile(file, randomBytes(bytes))
  return await coordinator.api.uploadPackage(file, { name, version: '1' })
}

/** Prometheus counters of the coordinator whose names start with `prefix`, by their full label text. */
export async function coordinatorMetrics (coordinator: CoordinatorProcess, prefix: string): Promise<Map<string, number>> {
  const response = await fetch(new URL('/metrics', coordinator.url), { headers: { authorization: `Bearer ${coordinator.adminToken}` } })
  const out = new Map<string, number>()
  for (const line of (await response.text()).split('\n')) {
    if (!line.startsWith(prefix)) continue
    const at = line.lastIndexOf(' ')
    out.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return out
}

/**
 * A device's stored records for a task: each (attempt, seq) exactly once,
 * seq 1, 2, 3… with no gap, the last settled. Returns the records.
 */
export async function exactHistory (coordinator: { api: CoordinatorProcess['api'] }, taskId: string, deviceId: string): Promise<any[]> {
  const { records } = await coordinator.api.get(`/v1/tasks/${taskId}/devices/${deviceId}/history`)
  const seqs = records.map((record: any) => record.seq)
  const expected = Array.from({ length: records.length }, (_, index) => index + 1)
  if (JSON.stringify(seqs) !== JSON.stringify(expected)) throw new Error(`device ${deviceId}: seqs ${seqs.join(',')} are not 1..${records.length}, each once`)
  return records
}

/** Bytes of the chunk files in an agent's cache folder. */
export async function cachedChunkBytes (dataDir: string): Promise<number> {
  let total = 0
  const root = join(dataDir, 'cache')
  for (const folder of await readdir(root).catch(() => [] as string[])) {
    if (!/^[0-9a-f]{2}$/.test(folder)) continue
    for (const name of await readdir(join(root, folder))) {
      if (/^[0-9a-f]{64}$/.test(name)) total += (await stat(join(root, folder, name))).size
    }
  }
  return total
}

/** Lines of a process's log that are JSON with the given msg. */
export async function logLines (logFile: string, msg: string): Promise<any[]> {
  const text = await readFile(logFile, 'utf8').catch(() => '')
  return text.split('\n').filter(line => line.includes(msg)).map(line => { try { return JSON.parse(line) } catch { return { raw: line } } })
}

/** Stops every process; after a pass, removes their data and logs too (they are kept to look at after a failure). */
export async function stopAll (agents: AgentProcess[], coordinators: CoordinatorProcess[], work: string, passed: boolean): Promise<void> {
  await Promise.all(agents.map(async agent => { await agent.stop() }))
  for (const coordinator of coordinators) await coordinator.stop()
  if (!passed) return
  await rm(work, { recursive: true, force: true })
  for (const folder of new Set([...agents.map(agent => agent.dataDir), ...coordinators.map(coordinator => coordinator.dataDir)])) {
    await rm(folder, { recursive: true, force: true })
    await rm(`${folder}.log`, { force: true })
  }
}
