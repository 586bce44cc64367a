import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { payloadBytes } from './phase.js'
import type { Lab, LabHost } from './topology.js'

/** The compiled file server, whether this module runs from dist/ or from source (tests). */
const FILE_SERVER = fileURLToPath(import.meta.url.endsWith('.ts') ? new URL('../../dist/bench/lab/file-server.js', import.meta.url) : new URL('./file-server.js', import.meta.url))
const FILE_SERVER_PORT = 8700

export interface RoundTrip {
  sent: number
  received: number
  lossPercent: number
  minMs: number
  averageMs: number
  maxMs: number
}

/** What the WAN does to small packets: `ping` from a host of a site to headquarters. */
export async function pingHq (lab: Lab, host: LabHost, count = 50, intervalSeconds = 0.05): Promise<RoundTrip> {
  const { stdout } = await lab.exec(host.ns, 'ping', ['-q', '-n', '-c', String(count), '-i', String(intervalSeconds), '-W', '2', lab.hqAddress])
  const packets = /(\d+) packets transmitted, (\d+) received/.exec(stdout)
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\//.exec(stdout)
  if (packets === null) throw new Error(`unexpected ping output: ${stdout}`)
  const sent = Number(packets[1])
  const received = Number(packets[2])
  return {
    sent,
    received,
    lossPercent: 100 * (sent - received) / sent,
    minMs: rtt === null ? Number.NaN : Number(rtt[1]),
    averageMs: rtt === null ? Number.NaN : Number(rtt[2]),
    maxMs: rtt === null ? Number.NaN : Number(rtt[3])
  }
}

export interface CurlReference {
  bytes: number
  seconds: number
  /** Bytes that entered the site over its WAN during the transfer. */
  wanRxBytes: number
  /** Their payload (headers of each packet taken off). */
  wanRxPayloadBytes: number
}

/**
 * The physical reference: one plain HTTP download of the same bytes with
 * `curl`, from a host of a site, of a file served in headquarters, alone on
 * the link.
 */
export async function curlReference (lab: Lab, host: LabHost, file: string): Promise<CurlReference> {
  const server = lab.spawn(lab.hq, process.execPath, [FILE_SERVER, file, lab.hqAddress, String(FILE_SERVER_PORT)])
  try {
    await new Promise<void>((resolve, reject) => {
      const exited = (code: number | null): void => { clearTimeout(timer); reject(new Error(`the reference file server exited with ${code}`)) }
      const timer = setTimeout(() => { server.off('exit', exited); reject(new Error('the reference file server did not start')) }, 30_000)
      server.once('exit', exited)
      createInterface({ input: server.stdout! }).once('line', () => { clearTimeout(timer); server.off('exit', exited); resolve() })
    })
    const before = lab.wanCountersNow(host.site)
    const { stdout } = await lab.exec(host.ns, 'curl', ['-sS', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', `http://${lab.hqAddress}:${FILE_SERVER_PORT}/`], { timeoutMs: 30 * 60_000 })
    const after = lab.wanCountersNow(host.site)
    const [bytes, seconds] = stdout.trim().split(' ').map(Number)
    return { bytes, seconds, wanRxBytes: after.rxBytes - before.rxBytes, wanRxPayloadBytes: payloadBytes(after.rxBytes - before.rxBytes, after.rxPackets - before.rxPackets) }
  } finally {
    server.kill('SIGTERM')
  }
}
