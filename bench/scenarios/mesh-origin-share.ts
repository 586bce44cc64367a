import { figure, type Figure, type ScenarioResult } from '../report.js'
import { BenchSite } from './mesh-site.js'

export interface MeshOriginShareOptions {
  /** @default 64 */
  sizeMiB?: number
  /** Site sizes to measure. @default [2, 5, 10] */
  agents?: number[]
}

/**
 * How many copies of a package cross the WAN for one site: all agents of a
 * site on loopback fetch a package at once, and the origin's own counter
 * says how many bytes it served.
 */
export async function meshOriginShare (options: MeshOriginShareOptions = {}): Promise<ScenarioResult> {
  const sizeMiB = options.sizeMiB ?? 64
  const counts = options.agents ?? [2, 5, 10]
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const figures: Figure[] = []
  const raw: Record<string, unknown> = {}
  for (const count of counts) {
    const site = await BenchSite.open(`origin-share-${count}`)
    try {
      const agents = []
      for (let index = 1; index <= count; index++) agents.push(await site.agent(`pc-${index}`))
      await site.connected(agents, count - 1)
      const pkg = await site.package(sizeMiB)
      const before = await site.originBytes()
      const taskStarted = Date.now()
      const { task, rows } = await site.distribute(pkg.id, agents)
      const served = await site.originBytes() - before
      const view = await site.api.get(`/v1/tasks/${task.id as string}`)
      figures.push(figure(`origin bytes ÷ package, ${count} agents`, served / pkg.sizeBytes, '×', { atMost: 1.02 }, `peer share ${(view.progress.peerShare * 100).toFixed(0)}%`))
      raw[`agents${count}`] = { packageBytes: pkg.sizeBytes, originBytes: served, wallMs: Date.now() - taskStarted, rows: rows.map(row => ({ hostname: row.hostname, bytesFromPeers: row.bytesFromPeers, bytesFromOrigin: row.bytesFromOrigin })) }
    } finally {
      await site.close()
    }
  }
  return { scenario: 'mesh-origin-share', startedAt, durationMs: Date.now() - started, parameters: { sizeMiB, agents: counts }, figures, raw }
}
