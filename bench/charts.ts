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
              {
                data: { values: bounds },
                layer: [
                  { mark: { type: 'rule', strokeDash: [4, 3] }, encoding: { x: { field: 'seconds', type: 'quantitative' }, color: { value: '#555' } } },
                  { mark: { type: 'text', angle: 270, align: 'right', dx: -4, dy: -6 }, encoding: { x: { field: 'seconds', type: 'quantitative' }, y: { value: 0 }, text: { field: 'label' } } }
                ]
              }
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

/** Renders a Vega-Lite specification to SVG, in Node, without a browser. */
export async function renderSvg (spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' })
  try {
    return await view.toSVG()
  } finally {
    view.finalize()
  }
}
