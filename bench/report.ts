import { execFileSync } from 'node:child_process'
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { cpus, totalmem, release } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TopLevelSpec } from 'vega-lite'
import { renderSvg } from './charts.js'

/** The repository's bench/ folder, whether running from source or from dist/. */
export const BENCH_DIR = (() => {
  const here = dirname(fileURLToPath(import.meta.url))
  return here.includes(`${join('dist', 'bench')}`) ? resolve(here, '../../bench') : here
})()

export interface Machine {
  cores: number
  cpuModel: string
  memoryBytes: number
  kernel: string
  node: string
}

export function machine (): Machine {
  return { cores: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryBytes: totalmem(), kernel: release(), node: process.version }
}

/** One figure beside its target, with whether it was met. */
export interface Figure {
  name: string
  value: number
  unit: string
  /** e.g. '≤ 1.02' or '≥ 0.8'; absent: reported only. */
  target?: string
  met?: boolean
  /** What the figure can be at best (the physics of the setup), e.g. '1 copy' or 'S/W = 21.5 s'. */
  bound?: string
  note?: string
}

export function figure (name: string, value: number, unit: string, target?: { atMost?: number, atLeast?: number }, note?: string, bound?: string): Figure {
  const out: Figure = { name, value, unit }
  if (target?.atMost !== undefined) { out.target = `≤ ${target.atMost}`; out.met = value <= target.atMost }
  if (target?.atLeast !== undefined) { out.target = `≥ ${target.atLeast}`; out.met = value >= target.atLeast }
  if (bound !== undefined) out.bound = bound
  if (note !== undefined) out.note = note
  return out
}

function formatValue (value: number): string {
  if (Number.isInteger(value)) return String(value)
  return Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 1 ? value.toFixed(2) : value.toFixed(3)
}

export function renderTable (figures: Figure[]): string {
  const withBounds = figures.some(f => f.bound !== undefined)
  const rows = figures.map(f => [f.name, `${formatValue(f.value)} ${f.unit}`.trim(), f.target ?? '', ...(withBounds ? [f.bound ?? ''] : []), f.met === undefined ? '' : f.met ? 'met' : 'MISSED', f.note ?? ''])
  const header = ['figure', 'value', 'target', ...(withBounds ? ['lower bound'] : []), '', 'note']
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)))
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |'
  return [line(header), '|' + widths.map(w => '-'.repeat(w + 2)).join('|') + '|', ...rows.map(line)].join('\n')
}

export interface ScenarioResult {
  scenario: string
  startedAt: string
  durationMs: number
  parameters: Record<string, unknown>
  figures: Figure[]
  raw: Record<string, unknown>
  /** Paths of charts, relative to bench/. */
  charts?: string[]
  /** A chart to render next to the JSON (Vega-Lite, rendered to SVG). */
  chart?: TopLevelSpec
}

/**
 * Prints the table, saves the summary (figures, parameters, machine; no raw samples) as
 * `bench/results/<scenario>-<stamp>.json`, the raw samples beside it as `….raw.json` (kept out of
 * git: they run to megabytes), and appends the table to bench/RESULTS.md.
 */
export async function publish (result: ScenarioResult): Promise<string> {
  const resultsDir = join(BENCH_DIR, 'results')
  await mkdir(resultsDir, { recursive: true })
  const stamp = result.startedAt.replace(/[:.]/g, '-')
  const file = join(resultsDir, `${result.scenario}-${stamp}.json`)
  const rawFile = join(resultsDir, `${result.scenario}-${stamp}.raw.json`)
  const charts = [...(result.charts ?? [])]
  if (result.chart !== undefined) {
    const chartFile = `${result.scenario}-${stamp}.svg`
    await writeFile(join(resultsDir, chartFile), await renderSvg(result.chart))
    charts.push(`results/${chartFile}`)
  }
  const { chart: _spec, raw, ...rest } = result
  const document = { ...rest, charts, machine: machine(), commit: gitCommit(), rawFile: basename(rawFile) }
  await writeFile(file, JSON.stringify(document, null, 2) + '\n')
  await writeFile(rawFile, JSON.stringify({ scenario: result.scenario, startedAt: result.startedAt, raw }) + '\n')
  const table = renderTable(result.figures)
  process.stdout.write(`\n${result.scenario} (${(result.durationMs / 1000).toFixed(0)} s)\n${table}\n\nsaved ${file} (raw samples: ${rawFile})${charts.map(chart => `\nchart ${join(BENCH_DIR, chart)}`).join('')}\n`)
  const markdown = join(BENCH_DIR, 'RESULTS.md')
  const existing = await readFile(markdown, 'utf8').catch(() => '# Benchmark results\n\nEach run appends its table here; summaries and charts are in `bench/results/`, raw samples in `*.raw.json` beside them (not in git).\n')
  const m = document.machine
  const section = `\n## ${result.scenario} — ${result.startedAt}\n\n${m.cores} cores (${m.cpuModel}), ${(m.memoryBytes / 2 ** 30).toFixed(0)} GiB, kernel ${m.kernel}, node ${m.node}, commit ${document.commit}. Parameters: ${JSON.stringify(result.parameters)}\n\n${table}\n${charts.map(chart => `\n![${result.scenario}](${chart})\n`).join('')}`
  await writeFile(markdown, existing.endsWith('\n') ? existing : existing + '\n')
  await appendFile(markdown, section)
  return file
}

function gitCommit (): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: BENCH_DIR, encoding: 'utf8' }).trim()
  } catch {
    return 'unknown'
  }
}

/** Peak resident memory of a process (VmHWM), bytes. */
export async function peakRssBytes (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const match = /VmHWM:\s+(\d+) kB/.exec(status)
  return match === null ? 0 : Number(match[1]) * 1024
}

/** CPU seconds a process has used (user + system). */
export async function cpuSeconds (pid: number): Promise<number> {
  const { userSeconds, systemSeconds } = await cpuTimes(pid)
  return userSeconds + systemSeconds
}

/** CPU seconds a process has used, in user space and in the kernel (which includes its share of TCP work). */
export async function cpuTimes (pid: number): Promise<{ userSeconds: number, systemSeconds: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { userSeconds: Number(fields[11]) / 100, systemSeconds: Number(fields[12]) / 100 }
}
