import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ApiClient } from '../../coordinator/cli/api-client.js'
import { adminClient, startMeshdeploy, type BenchProcess } from '../processes.js'
import { writeRandomFile } from '../random-file.js'

export interface BenchAgent extends BenchProcess {
  deviceId: string
  dataDir: string
  hostname: string
}

/** A coordinator and agents on loopback for one scenario, with everything removed afterwards. */
export class BenchSite {
  readonly root: string
  readonly coordinator: BenchProcess
  readonly url: string
  readonly api: ApiClient
  readonly agents: BenchAgent[] = []
  private token?: string

  private constructor (root: string, coordinator: BenchProcess, api: ApiClient) {
    this.root = root
    this.coordinator = coordinator
    this.url = coordinator.event.url
    this.api = api
  }

  static async open (name: string, options: { chunkSizeKiB?: number } = {}): Promise<BenchSite> {
    const root = await mkdtemp(join(tmpdir(), `meshdeploy-bench-${name}-`))
    const args = ['coordinator', 'start', '--data', join(root, 'coordinator'), '--port', '0', '--log-level', 'warn']
    if (options.chunkSizeKiB !== undefined) args.push('--chunk-size-kib', String(options.chunkSizeKiB))
    const coordinator = await startMeshdeploy(args, join(root, 'coordinator.log'), 'coordinator-started')
    return new BenchSite(root, coordinator, await adminClient(join(root, 'coordinator'), coordinator.event.url))
  }

  /**
   * Starts an agent on loopback (mDNS off: peers come from the coordinator's
   * list). `args` adds options; `coordinatorUrl` lets a scenario put a proxy
   * in between.
   */
  async agent (hostname: string, args: string[] = [], coordinatorUrl = this.url): Promise<BenchAgent> {
    this.token ??= (await this.api.post('/v1/enrollment-tokens', { maxUses: 1000 })).token as string
    const dataDir = join(this.root, hostname)
    await mkdir(join(dataDir, 'root'), { recursive: true })
    const listen = args.includes('--listen') ? [] : ['--listen', '/ip4/127.0.0.1/tcp/0']
    const started = await startMeshdeploy([
      'agent', 'start', '--data', dataDir, '--coordinator', coordinatorUrl, '--insecure-http', '--enroll-token', this.token, '--hostname', hostname,
      '--install-root', join(dataDir, 'root'), '--log-level', 'warn', '--site', 'bench', '--mdns', 'off', ...listen, ...args
    ], join(this.root, `${hostname}.log`), 'agent-started')
    const agent: BenchAgent = { ...started, deviceId: started.event.deviceId, dataDir, hostname }
    this.agents.push(agent)
    return agent
  }

  /** Waits until each of `agents` reports at least `peers` connected peers. */
  async connected (agents: BenchAgent[], peers: number, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const { devices } = await this.api.get('/v1/devices')
      const ours = devices.filter((device: any) => agents.some(agent => agent.deviceId === device.id))
      if (ours.length === agents.length && ours.every((device: any) => (device.connectedPeers ?? 0) >= peers)) return
      if (Date.now() > deadline) throw new Error('the agents did not connect to each other')
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }

  /** Uploads a package of incompressible bytes. */
  async package (sizeMiB: number): Promise<any> {
    const file = join(this.root, `package-${sizeMiB}.bin`)
    await writeRandomFile(file, sizeMiB * 1024 * 1024)
    const pkg = await this.api.uploadPackage(file, { name: `bench-${sizeMiB}`, version: '1' })
    await rm(file)
    return pkg
  }

  /** Distributes a package to devices and waits until they settle; returns their rows. */
  async distribute (packageId: string, devices: BenchAgent[], extra: Record<string, unknown> = {}, timeoutMs = 30 * 60_000): Promise<{ task: any, rows: any[] }> {
    const task = await this.api.post('/v1/tasks', {
      packageId, action: 'distribute-files', destination: `/data/${Date.now()}`, targets: { deviceIds: devices.map(device => device.deviceId) }, maxAttempts: 1, ...extra
    })
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const { devices: rows } = await this.api.get(`/v1/tasks/${task.id as string}/devices`)
      if (rows.length === devices.length && rows.every((row: any) => row.state === 'succeeded' || row.state === 'failed')) {
        const failed = rows.filter((row: any) => row.state !== 'succeeded')
        if (failed.length > 0) throw new Error(`devices failed: ${failed.map((row: any) => `${row.hostname as string}: ${row.message as string}`).join('; ')}`)
        return { task, rows }
      }
      if (Date.now() > deadline) throw new Error(`task ${task.id as string} did not settle`)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }

  /** Milliseconds a device spent downloading, by its own clock (first downloading record to verifying). */
  async downloadMs (taskId: string, deviceId: string): Promise<number> {
    const { records } = await this.api.get(`/v1/tasks/${taskId}/devices/${deviceId}/history`)
    const start = records.find((record: any) => record.state === 'downloading').at as number
    const end = records.find((record: any) => record.state === 'verifying').at as number
    return end - start
  }

  async originBytes (): Promise<number> {
    return (await this.api.get('/v1/stats')).origin.bytesServed as number
  }

  async close (): Promise<void> {
    this.api.close()
    await Promise.all(this.agents.map(async agent => { await agent.stop() }))
    await this.coordinator.stop()
    await rm(this.root, { recursive: true, force: true })
  }
}
