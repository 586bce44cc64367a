// The baseline of the mesh throughput figure: the same bytes over one raw
// libp2p stream (tcp + noise + yamux, the agents' configuration) between
// two processes, with nothing else done to them.
//   node raw-stream.js receive            prints its address, counts what arrives, answers the total and its CPU time
//   node raw-stream.js send ADDRESS BYTES prints { bytes, ms, senderCpuSeconds, receiverCpuSeconds }
import '../protocol/polyfill.js'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream } from '@libp2p/interface'
import { generateKeyPair } from '../protocol/index.js'
import { PeerGate } from '../agent/p2p/gater.js'
import { createMeshNode } from '../agent/p2p/node.js'
import { sendBytes } from '../agent/protocols/frames.js'

const PROTOCOL = '/meshdeploy/bench/raw/1.0.0'
const BLOCK_BYTES = 1024 * 1024

/** A node that admits anyone: the baseline measures transport, not admission. */
async function node (): Promise<Awaited<ReturnType<typeof createMeshNode>>> {
  const gate = { connectionGater: () => ({}) } as unknown as PeerGate
  return await createMeshNode({ key: generateKeyPair(), listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, mdnsServiceTag: '_bench._udp.local', gater: gate.connectionGater() })
}

const [mode, address, bytesText] = process.argv.slice(2)
if (mode === 'receive') {
  const receiver = await node()
  await receiver.handle(PROTOCOL, async (stream: Stream) => {
    let total = 0
    const cpu = process.cpuUsage()
    for await (const piece of stream) total += piece.byteLength
    const used = process.cpuUsage(cpu)
    stream.send(new TextEncoder().encode(JSON.stringify({ total, cpuSeconds: (used.user + used.system) / 1e6 })))
    await stream.close()
  })
  process.stdout.write(receiver.getMultiaddrs()[0].toString() + '\n')
  process.stdin.resume()
  process.stdin.on('end', () => { void Promise.resolve(receiver.stop()).then(() => process.exit(0)) })
} else if (mode === 'send' && address !== undefined && bytesText !== undefined) {
  const sender = await node()
  const total = Number(bytesText)
  const stream = await sender.dialProtocol(multiaddr(address), PROTOCOL, { signal: AbortSignal.timeout(10_000) })
  const block = new Uint8Array(BLOCK_BYTES)
  const started = performance.now()
  const cpu = process.cpuUsage()
  for (let sent = 0; sent < total; sent += BLOCK_BYTES) await sendBytes(stream, block.subarray(0, Math.min(BLOCK_BYTES, total - sent)), { signal: AbortSignal.timeout(60_000) })
  await stream.close()
  let answer = ''
  for await (const piece of stream) answer += new TextDecoder().decode(piece.subarray())
  const ms = performance.now() - started
  const used = process.cpuUsage(cpu)
  const counted = JSON.parse(answer) as { total: number, cpuSeconds: number }
  if (counted.total !== total) throw new Error(`the receiver counted ${counted.total} bytes, not ${total}`)
  process.stdout.write(JSON.stringify({ bytes: total, ms, senderCpuSeconds: (used.user + used.system) / 1e6, receiverCpuSeconds: counted.cpuSeconds }) + '\n')
  await sender.stop()
} else {
  process.stderr.write('usage: raw-stream receive | raw-stream send ADDRESS BYTES\n')
  process.exitCode = 2
}
