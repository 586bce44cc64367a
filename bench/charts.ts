import * as vega from 'vega'
import { compile, type TopLevelSpec } from 'vega-lite'
import { cdfPoints } from './lab/rates.js'

/** What one lab run's chart shows. */
export interface LabChartInput {
  title: string
  /** Completion (download done) of every device, seconds after the task began, per mode. */
  completionSeconds: Array<{ mode: string, seconds: number }>
  /** max(S/W, S/C): no device can finish sooner. */
  lowerBoundSeconds: number
  /** Target of the completion ratio (× the lower bound). */
  completionTarget: number
  /** WAN bytes into each site ÷ package size, per mode. */
  wanCopies: Array<{ mode: string, site: string, copies: number }>
  /** Target of the WAN copies (meshdeploy). */
  copiesTarget: number
  /** Devices per site: the copies a naive fleet pulls. */
  devicesPerSite: number
  /** Bytes each device received, by source (meshdeploy). */
  bySource: Array<{ device: string, source: 'peers' | 'origin', mebibytes: number }>
  /** Receive rate of each device's interface over time (meshdeploy). */
  receiveRates: Array<{ device: string, seconds: number, megabytesPerSecond: number }>
  /** The per-device cap, MB/s, drawn over the rates. */
  capMegabytesPerSecond?: number
}

/** Dashed vertical lines at `field` of each value, labelled with its `label`: bounds and targets drawn over a chart. */
function verticalRules (values: Array<{ label: string }>, field: string): any {
  return {
    data: { values },
    layer: [
      { mark: { type: 'rule', strokeDash: [4, 3] }, encoding: { x: { field, type: 'quantitative' }, color: { value: '#555' } } },
      { mark: { type: 'text', angle: 270, align: 'right', dx: -4, dy: -6 }, encoding: { x: { field, type: 'quantitative' }, y: { value: 0 }, text: { field: 'label' } } }
    ]
  }
}

const MODE_COLORS = { domain: ['meshdeploy', 'baseline'], range: ['#1f77b4', '#d62728'] }

/** The Vega-Lite specification of a lab run's chart: four panels, each with its target and lower bound drawn in. */
export function labChartSpec (input: LabChartInput): TopLevelSpec {
  const cdf = [...new Set(input.completionSeconds.map(point => point.mode))].flatMap(mode =>
    [{ mode, seconds: 0, fraction: 0 }, ...cdfPoints(input.completionSeconds.filter(point => point.mode === mode).map(point => point.seconds)).map(point => ({ mode, seconds: point.value, fraction: point.fraction }))])
  const bounds = [
    { label: 'lower bound', seconds: input.lowerBoundSeconds },
    { label: `target ${input.completionTarget} × bound`, seconds: input.lowerBoundSeconds * input.completionTarget }
  ]
  const copyRules = [
    { label: `target ≤ ${input.copiesTarget}`, copies: input.copiesTarget },
    { label: `naive: ${input.devicesPerSite} copies`, copies: input.devicesPerSite }
  ]
  const rateLayers: any[] = [{
    data: { values: input.receiveRates },
    mark: { type: 'line', strokeWidth: 1, opacity: 0.6, interpolate: 'step-before' },
    encoding: {
      x: { field: 'seconds', type: 'quantitative', title: 'seconds after the task began' },
      y: { field: 'megabytesPerSecond', type: 'quantitative', title: 'receive rate, MB/s (250 ms samples)' },
      detail: { field: 'device' },
      color: { value: '#1f77b4' }
    }
  }]
  if (input.capMegabytesPerSecond !== undefined) {
    rateLayers.push({
      data: { values: [{ label: 'cap', value: input.capMegabytesPerSecond }, { label: 'cap + 5 %', value: input.capMegabytesPerSecond * 1.05 }] },
      layer: [
        { mark: { type: 'rule', strokeDash: [4, 3] }, encoding: { y: { field: 'value', type: 'quantitative' }, color: { value: '#555' } } },
        { mark: { type: 'text', align: 'left', dx: 4, dy: -6 }, encoding: { y: { field: 'value', type: 'quantitative' }, x: { value: 0 }, text: { field: 'label' } } }
      ]
    })
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: input.title, anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: null } },
    resolve: { scale: { color: 'independent' } },
    vconcat: [
      {
        hconcat: [
          {
            title: 'Completion per device (CDF)',
            width: 380,
            height: 240,
            layer: [
              {
                data: { values: cdf },
                mark: { type: 'line', interpolate: 'step-after', point: true },
                encoding: {
                  x: { field: 'seconds', type: 'quantitative', title: 'seconds until the device holds the package' },
                  y: { field: 'fraction', type: 'quantitative', title: 'devices done', axis: { format: '%' } },
                  color: { field: 'mode', type: 'nominal', scale: MODE_COLORS, title: null }
                }
              },
              verticalRules(bounds, 'seconds')
            ]
          },
          {
            title: 'WAN bytes per site ÷ package size (TCP payload)',
            width: 240,
            height: 240,
            layer: [
              {
                data: { values: input.wanCopies },
                mark: 'bar',
                encoding: {
                  x: { field: 'site', type: 'nominal', title: null },
                  xOffset: { field: 'mode', type: 'nominal', scale: { domain: MODE_COLORS.domain } },
                  y: { field: 'copies', type: 'quantitative', title: 'copies of the package' },
                  color: { field: 'mode', type: 'nominal', scale: MODE_COLORS, title: null }
                }
              },
              {
                data: { values: input.wanCopies },
                mark: { type: 'text', dy: -6 },
                encoding: {
                  x: { field: 'site', type: 'nominal' },
                  xOffset: { field: 'mode', type: 'nominal', scale: { domain: MODE_COLORS.domain } },
                  y: { field: 'copies', type: 'quantitative' },
                  text: { field: 'copies', type: 'quantitative', format: '.3f' }
                }
              },
              {
                data: { values: copyRules },
                layer: [
                  { mark: { type: 'rule', strokeDash: [4, 3] }, encoding: { y: { field: 'copies', type: 'quantitative' }, color: { value: '#555' } } },
                  { mark: { type: 'text', align: 'right', dy: -6 }, encoding: { y: { field: 'copies', type: 'quantitative' }, x: { value: 240 }, text: { field: 'label' } } }
                ]
              }
            ]
          }
        ]
      },
      {
        hconcat: [
          {
            title: 'Bytes by source (meshdeploy)',
            width: 380,
            height: 220,
            data: { values: input.bySource },
            mark: 'bar',
            encoding: {
              x: { field: 'device', type: 'nominal', title: null, sort: null },
              y: { field: 'mebibytes', type: 'quantitative', title: 'MiB received', stack: 'zero' },
              color: { field: 'source', type: 'nominal', scale: { domain: ['origin', 'peers'], range: ['#ff7f0e', '#2ca02c'] }, title: null }
            }
          },
          {
            title: 'Receive rate per device (meshdeploy)',
            width: 240,
            height: 220,
            layer: rateLayers
          }
        ]
      }
    ]
  } as TopLevelSpec
}

/** What a scale run's chart shows, per fleet size. */
export interface ScaleChartInput {
  title: string
  /** Task → held device, milliseconds, every held device, per fleet size. */
  wakeMs: Array<{ fleet: string, ms: number[] }>
  /** Reconnect requests per second after the kill, per fleet size and way of coming back. */
  reconnects: Array<{ fleet: string, policy: string, perSecond: number[] }>
}

/** At most `count` points of a CDF, evenly spaced in rank, the last one always kept. */
function thinCdf (values: readonly number[], count: number): Array<{ value: number, fraction: number }> {
  const points = cdfPoints(values)
  if (points.length <= count) return points
  const step = points.length / count
  const out: Array<{ value: number, fraction: number }> = []
  for (let at = step - 1; at < points.length; at += step) out.push(points[Math.floor(at)])
  if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1])
  return out
}

/** The Vega-Lite specification of a scale run's chart: the wake of the held devices, and the reconnects after a restart. */
export function scaleChartSpec (input: ScaleChartInput): TopLevelSpec {
  const wake = input.wakeMs.flatMap(({ fleet, ms }) => [{ fleet, ms: 0, fraction: 0 }, ...thinCdf(ms, 200).map(point => ({ fleet, ms: point.value, fraction: point.fraction }))])
  const targets = [{ label: 'target p50 250 ms', ms: 250 }, { label: 'target p99 1 s', ms: 1000 }]
  const reconnects = input.reconnects.flatMap(({ fleet, policy, perSecond }) => perSecond.map((requests, second) => ({ series: `${fleet}, ${policy}`, second, requests })))
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: input.title, anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: null } },
    resolve: { scale: { color: 'independent' } },
    hconcat: [
      {
        title: 'Task → held device (CDF)',
        width: 380,
        height: 260,
        layer: [
          {
            data: { values: wake },
            mark: { type: 'line', interpolate: 'step-after' },
            encoding: {
              x: { field: 'ms', type: 'quantitative', title: 'ms from the task\'s creation until the device has it' },
              y: { field: 'fraction', type: 'quantitative', title: 'held devices', axis: { format: '%' } },
              color: { field: 'fleet', type: 'nominal', title: 'fleet' }
            }
          },
          verticalRules(targets, 'ms')
        ]
      },
      {
        title: 'Reconnects per second after the coordinator was killed',
        width: 380,
        height: 260,
        data: { values: reconnects },
        mark: { type: 'line', interpolate: 'step-after', point: true },
        encoding: {
          x: { field: 'second', type: 'quantitative', title: 'seconds after the kill' },
          y: { field: 'requests', type: 'quantitative', title: 'requests sent in that second' },
          color: { field: 'series', type: 'nominal', title: null }
        }
      }
    ]
  } as TopLevelSpec
}

/** Renders a Vega-Lite specification to SVG, in Node, without a browser. */
export async function renderSvg (spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' })
  try {
    return await view.toSVG()
  } finally {
    view.finalize()
  }
}
