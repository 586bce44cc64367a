import '../protocol/polyfill.js'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair, signStatusRecord, toHex, peerIdOf } from '../protocol/index.js'
import { openServices } from '../coordinator/services.js'
import { silentLogger } from '../protocol/logger.js'
import * as keys from '../protocol/keys.js'

const variant = process.argv[2] ?? 'full'
const dir = await mkdtemp(join('/tmp/mdg-exp', 'ingest-'))
const services = await openServices({ dataDir: dir, logger: silentLogger(), autoTick: false })
const D = 40, PER = 1500, BATCH = 500, CONC = Number(process.argv[3] ?? 8)
const devices = []
for (let d = 0; d < D; d++) {
  const key = generateKeyPair()
  const rec = { id: `dev-${d}`, hostname: `h${d}`, publicKey: toHex(key.publicKey), peerId: peerIdOf(key.publicKey), platform: 'linux', arch: 'x64', site: 's', groups: [], status: 'active', enrolledAt: new Date().toISOString() }
  await services.store.write([{ type: 'put', collection: 'devices', key: rec.id, value: rec as any }])
  devices.push({ rec, key })
}
await services.store.write([{ type: 'put', collection: 'tasks', key: 't1', value: { id: 't1' } as any }])
const all = []
for (let s = 1; s <= PER; s++) for (const { rec, key } of devices) all.push(JSON.parse(JSON.stringify(signStatusRecord({ type: 'meshdeploy.status', deviceId: rec.id, taskId: 't1', revision: 1, attempt: 1, seq: s, state: 'downloading', at: Date.now(), bytesTotal: 1e8, bytesDone: s, bytesFromPeers: 0, bytesFromOrigin: s }, key))))
const batches = []
for (let i = 0; i < all.length; i += BATCH) batches.push(all.slice(i, i + BATCH))
if (variant === 'noevents') services.statuses.removeAllListeners('records')
if (variant === 'noverify') { const c = await import('node:crypto'); (c as any).default.verify = (a: any, b: any, k: any, s: any, cb: any) => { if (cb) setImmediate(() => cb(null, true)); return true }; (await import('node:module')).syncBuiltinESMExports() }
let next = 0
const cpu0 = process.cpuUsage(); const t0 = performance.now()
await Promise.all(Array.from({ length: CONC }, async () => { while (next < batches.length) { const b = batches[next++]; const r = await services.statuses.ingest(b, devices[0].rec as any); if (r.acknowledged.length !== b.length) throw new Error('ack') } }))
const ms = performance.now() - t0; const cpu = process.cpuUsage(cpu0)
console.log(variant, 'records/s', Math.round(all.length / ms * 1000), 'cpu µs/record', ((cpu.user + cpu.system) / all.length).toFixed(1))
await services.close()
