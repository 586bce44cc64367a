import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { labChartSpec } from '../charts.js'
import { LabFleet } from '../lab/fleet.js'
import { labChartInput, labFigures, overheadFigures, type LabFiguresInput } from '../lab/figures.js'
import { runPhase, type ChurnPlan, type PhaseResult } from '../lab/phase.js'
import { curlReference, pingHq } from '../lab/reference.js'
import { delayLineAvailable, labAvailable } from '../lab/topology.js'
import { temporaryFolder } from '../processes.js'
import { writeRandomFile } from '../random-file.js'
import type { ScenarioResult } from '../report.js'

/** Every namespace of a bench lab starts with this. */
export const LAB_PREFIX = 'mdb'

export interface LabScenarioInit {
  scenario: string
  sites: number
  agentsPerSite: number
  sizeMiB: number
  wanMbit: number
  /** One-way, added in each direction. */
  wanDelayMs: number
  wanLossPercent: number
  /** Absent: the LAN is not shaped. */
  lanMbit?: number
  /** The task's per-device cap, KB/s of 1024 bytes. */
  capKBps?: number
  churn?: ChurnPlan
  /** Idle period measured before the task (discovery and announcement overhead). */
  idleMs?: number
  /** Whether to run the baseline (every device from the origin) in the same run. @default true */
  baseline?: boolean
  /** Whether to time a plain curl of the same bytes. @default true */
  reference?: boolean
}

/**
 * A branch-office run: headquarters with the coordinator, K sites of N
 * agents behind shaped WAN links, one package distributed to every device
 * with meshdeploy and then, in the same run, by the naive way (every device
 * from the origin, `--p2p off`), with a plain curl of the same bytes as the
 * physical reference. Everything is removed at the end, also after a
 * failure or Ctrl-C.
 */
export async function labScenario (init: LabScenarioInit): Promise<ScenarioResult> {
  const available = await labAvailable()
  if (!available.ok) throw new Error(`the ${init.scenario} scenario needs network namespaces: ${available.reason}`)
  if (init.wanDelayMs > 0 || init.wanLossPercent > 0) {
    const line = await delayLineAvailable()
    if (!line.ok) throw new Error(`WAN delay and loss need the delay line: ${line.reason}`)
  }
  const startedAt = new Date().toISOString()
  const started = Date.now()
  const folder = await temporaryFolder(init.scenario)
  const parameters = { ...init }
  let fleet: LabFleet | undefined
  try {
    const log = (message: string): void => { process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}\n`) }
    fleet = await LabFleet.open({
      root: folder.path,
      lab: {
        prefix: LAB_PREFIX,
        sites: init.sites,
        hostsPerSite: init.agentsPerSite,
        wanMbit: init.wanMbit,
        wanDelayMs: init.wanDelayMs,
        wanLossPercent: init.wanLossPercent,
        ...(init.lanMbit !== undefined ? { lanMbit: init.lanMbit } : {})
      }
    })
    log(`lab ${fleet.lab.name}: ${init.sites} sites × ${init.agentsPerSite} hosts, WAN ${init.wanMbit} Mbit/s, ${init.wanDelayMs} ms each way, ${init.wanLossPercent} % loss, LAN ${init.lanMbit ?? 'unshaped'}`)
    const probe = fleet.lab.sites[0].hosts[0]
    const link = await pingHq(fleet.lab, probe)
    log(`WAN round trip ${link.averageMs} ms (min ${link.minMs}), loss ${link.lossPercent.toFixed(1)} %`)
    const file = join(folder.path, 'package.bin')
    const sizeBytes = init.sizeMiB * 2 ** 20
    await writeRandomFile(file, sizeBytes)
    const pkg = await fleet.api.uploadPackage(file, { name: `${init.scenario}-${init.sizeMiB}mib`, version: '1' })
    log(`package ${pkg.id as string}: ${pkg.sizeBytes as number} bytes in chunks of ${pkg.chunkSizeBytes as number}`)
    let reference
    if (init.reference ?? true) {
      reference = await curlReference(fleet.lab, probe, file)
      log(`curl reference: ${reference.seconds.toFixed(1)} s, ${(reference.bytes * 8 / reference.seconds / 1e6).toFixed(1)} Mbit/s`)
    }
    await rm(file)

    const phase = async (mode: PhaseResult['mode']): Promise<PhaseResult> => {
      for (const agent of fleet!.agents) await fleet!.wipe(agent)
      log(`${mode}: starting ${fleet!.agents.length} agents`)
      const result = await runPhase({
        fleet: fleet!,
        mode,
        packageId: pkg.id as string,
        packageBytes: pkg.sizeBytes as number,
        ...(init.capKBps !== undefined ? { capKBps: init.capKBps } : {}),
        ...(init.churn !== undefined ? { churn: init.churn } : {}),
        ...(init.idleMs !== undefined && mode === 'meshdeploy' ? { idleMs: init.idleMs } : {})
      })
      const last = Math.max(...result.devices.map(device => device.downloadDoneMs ?? Number.POSITIVE_INFINITY))
      log(`${mode}: every device settled after ${(result.durationMs / 1000).toFixed(1)} s; last download done at ${(last / 1000).toFixed(1)} s; WAN ${result.wan.map(site => `${site.site} ${(site.rxBytes / sizeBytes).toFixed(3)} ×`).join(', ')}`)
      return result
    }
    const meshdeploy = await phase('meshdeploy')
    const baseline = (init.baseline ?? true) ? await phase('baseline') : undefined

    const input: LabFiguresInput = {
      packageBytes: pkg.sizeBytes as number,
      devicesPerSite: init.agentsPerSite,
      wanMbit: init.wanMbit,
      wanDelayMs: init.wanDelayMs,
      ...(init.capKBps !== undefined ? { capKBps: init.capKBps } : {}),
      meshdeploy,
      ...(baseline !== undefined ? { baseline } : {}),
      ...(reference !== undefined ? { reference } : {}),
      link
    }
    const figures = [...labFigures(input), ...(init.idleMs !== undefined || init.agentsPerSite >= 20 ? overheadFigures(meshdeploy, pkg.sizeBytes as number) : [])]
    const title = `${init.scenario}: ${init.sites} × ${init.agentsPerSite} agents, ${init.sizeMiB} MiB, WAN ${init.wanMbit} Mbit/s ${init.wanDelayMs} ms${init.capKBps !== undefined ? `, cap ${init.capKBps} KB/s` : ''}`
    return {
      scenario: init.scenario,
      startedAt,
      durationMs: Date.now() - started,
      parameters,
      figures,
      raw: { packageBytes: pkg.sizeBytes, chunkSizeBytes: pkg.chunkSizeBytes, lab: fleet.lab.name, link, reference, meshdeploy, baseline },
      chart: labChartSpec(labChartInput(title, input))
    }
  } finally {
    await fleet?.close()
    await folder.removeNow()
  }
}
