import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createConnection, createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)

/**
 * A branch-office lab of network namespaces:
 *
 *   <name>-hq       hq bridge 10.77.0.1/24 (the coordinator binds here); one WAN veth per site
 *   <name>-s<k>-r   site router: WAN end 10.77.<100+k>.2/30, LAN bridge 10.77.<k>.254/24 (multicast flooded)
 *   <name>-s<k>-h<h> host: 10.77.<k>.<h>/24, default via the router, 224.0.0.0/4 on its LAN interface
 *
 * Every veth is created inside its namespaces (nothing appears in the host
 * namespace), so interface names only need to be unique per namespace.
 * Site routers do not forward multicast: mDNS stays inside a site. WAN
 * links can be shaped with htb on both ends (this kernel has no netem, so
 * delay needs a userspace delay line, which this builder does not add).
 */
export interface LabInit {
  /** Prefix of every namespace; a run id follows it so that runs do not collide. */
  prefix: string
  sites: number
  hostsPerSite: number
  /** WAN rate per direction, Mbit/s; absent: unshaped. */
  wanMbit?: number
  /** Shaper queue in milliseconds of the WAN rate. @default 100 */
  wanQueueMs?: number
}

export interface LabHost {
  site: number
  index: number
  ns: string
  address: string
  /** The host's LAN interface. */
  device: string
}

export interface LabSite {
  index: number
  router: string
  /** The LAN of the site, e.g. 10.77.1.0/24. */
  cidr: string
  hosts: LabHost[]
}

export interface WanCounters {
  /** Bytes into the site (downloads). */
  rxBytes: number
  /** Bytes out of the site (uploads). */
  txBytes: number
}

/** The compiled forwarder, whether this module runs from dist/ or from source (tests). */
const FORWARDER = fileURLToPath(import.meta.url.endsWith('.ts') ? new URL('../../dist/bench/lab/forwarder.js', import.meta.url) : new URL('./forwarder.js', import.meta.url))

const HQ_ADDRESS = '10.77.0.1'
const WAN_DEVICE = 'mdmwan'
const LAN_BRIDGE = 'mdmbr'
const HOST_DEVICE = 'mdm0'

/** Whether this process may build a lab: root, with iproute2's netns support. */
export async function labAvailable (): Promise<{ ok: true } | { ok: false, reason: string }> {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'network namespaces need root' }
  try {
    await run('ip', ['netns', 'list'])
    await run('tc', ['-V'])
  } catch (error) {
    return { ok: false, reason: `ip netns or tc is unavailable: ${(error as Error).message}` }
  }
  return { ok: true }
}

async function ip (...args: string[]): Promise<void> {
  await run('ip', args)
}

async function inNs (ns: string, ...command: string[]): Promise<string> {
  return (await run('ip', ['netns', 'exec', ns, ...command])).stdout
}

async function sysctl (ns: string, ...settings: string[]): Promise<void> {
  await inNs(ns, 'sysctl', '-qw', ...settings)
}

/** Namespaces under a prefix that processes still live in get those processes killed first, or the namespace outlives its deletion. */
async function killIn (namespaces: string[]): Promise<void> {
  const pidsOf = async (ns: string): Promise<number[]> => {
    try {
      return (await run('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(line => line.trim() !== '').map(Number)
    } catch {
      return []
    }
  }
  const signal = (pids: number[], name: NodeJS.Signals): void => {
    for (const pid of pids) {
      try { process.kill(pid, name) } catch {}
    }
  }
  for (const ns of namespaces) signal(await pidsOf(ns), 'SIGTERM')
  for (let attempt = 0; attempt < 30; attempt++) {
    const left = (await Promise.all(namespaces.map(pidsOf))).flat()
    if (left.length === 0) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  for (const ns of namespaces) signal(await pidsOf(ns), 'SIGKILL')
}

/** Namespaces whose names start with `prefix-`. */
export async function namespacesWithPrefix (prefix: string): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list'])
  return stdout.split('\n').map(line => line.split(' ')[0]).filter(name => name.startsWith(`${prefix}-`))
}

/** Removes every namespace under a prefix (left by a run that was killed), its processes first. */
export async function sweep (prefix: string): Promise<string[]> {
  const namespaces = await namespacesWithPrefix(prefix)
  await killIn(namespaces)
  for (const ns of namespaces) await ip('netns', 'del', ns).catch(() => {})
  return namespaces
}

const live = new Set<Lab>()
let hooked = false

/** Tears every live lab down on SIGINT, SIGTERM, and (synchronously, as a last resort) on exit. */
function hookSignals (): void {
  if (hooked) return
  hooked = true
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void Promise.all([...live].map(async lab => { await lab.destroy() })).finally(() => { process.exit(signal === 'SIGINT' ? 130 : 143) })
    })
  }
  process.once('exit', () => {
    for (const lab of live) lab.destroySync()
  })
}

export class Lab {
  readonly name: string
  readonly hq: string
  readonly hqAddress = HQ_ADDRESS
  readonly sites: LabSite[] = []
  private readonly namespaces: string[] = []
  private readonly children = new Set<ChildProcess>()
  private readonly servers: Server[] = []
  private destroyed?: Promise<void>

  private constructor (name: string) {
    this.name = name
    this.hq = `${name}-hq`
  }

  /** Builds the lab; on any failure (or a signal) tears down what it had built. */
  static async create (init: LabInit): Promise<Lab> {
    if (init.sites < 1 || init.sites > 99 || init.hostsPerSite < 1 || init.hostsPerSite > 250) throw new RangeError('1 to 99 sites of 1 to 250 hosts')
    hookSignals()
    const lab = new Lab(`${init.prefix}-${randomBytes(3).toString('hex')}`)
    live.add(lab)
    try {
      await lab.build(init)
      return lab
    } catch (error) {
      await lab.destroy()
      throw error
    }
  }

  private async addNamespace (ns: string, forwarding: boolean): Promise<void> {
    await ip('netns', 'add', ns)
    this.namespaces.push(ns)
    await ip('-n', ns, 'link', 'set', 'lo', 'up')
    // Before any interface exists, so that every interface inherits it.
    await sysctl(ns, 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', `net.ipv4.ip_forward=${forwarding ? 1 : 0}`,
      'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.default.send_redirects=0')
  }

  private async build (init: LabInit): Promise<void> {
    await this.addNamespace(this.hq, true)
    await ip('-n', this.hq, 'link', 'add', 'mdmhq', 'type', 'bridge')
    await ip('-n', this.hq, 'addr', 'add', `${HQ_ADDRESS}/24`, 'dev', 'mdmhq')
    await ip('-n', this.hq, 'link', 'set', 'mdmhq', 'up')
    for (let k = 1; k <= init.sites; k++) {
      const router = `${this.name}-s${k}-r`
      await this.addNamespace(router, true)
      await sysctl(router, 'net.bridge.bridge-nf-call-iptables=0', 'net.bridge.bridge-nf-call-ip6tables=0', 'net.bridge.bridge-nf-call-arptables=0').catch(() => {})
      await ip('-n', router, 'link', 'add', LAN_BRIDGE, 'type', 'bridge', 'mcast_snooping', '0', 'stp_state', '0')
      await ip('-n', router, 'addr', 'add', `10.77.${k}.254/24`, 'dev', LAN_BRIDGE)
      await ip('-n', router, 'link', 'set', LAN_BRIDGE, 'up')
      const hqEnd = `mdms${k}`
      await ip('-n', router, 'link', 'add', WAN_DEVICE, 'type', 'veth', 'peer', 'name', hqEnd, 'netns', this.hq)
      // No IPv6 on the WAN: its counters then carry only what the test sends.
      await sysctl(router, `net.ipv6.conf.${WAN_DEVICE}.disable_ipv6=1`)
      await sysctl(this.hq, `net.ipv6.conf.${hqEnd}.disable_ipv6=1`)
      await ip('-n', router, 'addr', 'add', `10.77.${100 + k}.2/30`, 'dev', WAN_DEVICE)
      await ip('-n', this.hq, 'addr', 'add', `10.77.${100 + k}.1/30`, 'dev', hqEnd)
      await ip('-n', router, 'link', 'set', WAN_DEVICE, 'up')
      await ip('-n', this.hq, 'link', 'set', hqEnd, 'up')
      await ip('-n', router, 'route', 'add', 'default', 'via', `10.77.${100 + k}.1`, 'dev', WAN_DEVICE)
      await ip('-n', this.hq, 'route', 'add', `10.77.${k}.0/24`, 'via', `10.77.${100 + k}.2`, 'dev', hqEnd)
      if (init.wanMbit !== undefined) {
        await this.shape(this.hq, hqEnd, init.wanMbit, init.wanQueueMs ?? 100)
        await this.shape(router, WAN_DEVICE, init.wanMbit, init.wanQueueMs ?? 100)
      }
      const site: LabSite = { index: k, router, cidr: `10.77.${k}.0/24`, hosts: [] }
      for (let h = 1; h <= init.hostsPerSite; h++) {
        const ns = `${this.name}-s${k}-h${h}`
        await this.addNamespace(ns, false)
        const port = `mdmh${h}`
        await ip('-n', router, 'link', 'add', port, 'type', 'veth', 'peer', 'name', HOST_DEVICE, 'netns', ns)
        await ip('-n', router, 'link', 'set', port, 'master', LAN_BRIDGE, 'up')
        await ip('-n', ns, 'addr', 'add', `10.77.${k}.${h}/24`, 'dev', HOST_DEVICE)
        await ip('-n', ns, 'link', 'set', HOST_DEVICE, 'up')
        await ip('-n', ns, 'route', 'add', 'default', 'via', `10.77.${k}.254`, 'dev', HOST_DEVICE)
        // Multicast (mDNS) goes out on the LAN.
        await ip('-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', HOST_DEVICE)
        site.hosts.push({ site: k, index: h, ns, address: `10.77.${k}.${h}`, device: HOST_DEVICE })
      }
      this.sites.push(site)
    }
  }

  /** htb on a WAN end: egress shaping on both ends shapes both directions exactly. */
  private async shape (ns: string, device: string, mbit: number, queueMs: number): Promise<void> {
    const bytesPerSecond = mbit * 1_000_000 / 8
    // htb's default burst is far too small for 64 KB GSO packets.
    const burst = Math.max(65_536, Math.round(bytesPerSecond / 1000))
    const queue = Math.max(2 * 65_536, Math.round(bytesPerSecond * queueMs / 1000))
    await inNs(ns, 'tc', 'qdisc', 'replace', 'dev', device, 'root', 'handle', '1:', 'htb', 'default', '10')
    await inNs(ns, 'tc', 'class', 'add', 'dev', device, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', `${mbit}mbit`, 'ceil', `${mbit}mbit`, 'burst', String(burst), 'cburst', String(burst), 'quantum', '60000')
    await inNs(ns, 'tc', 'qdisc', 'add', 'dev', device, 'parent', '1:10', 'handle', '10:', 'bfifo', 'limit', String(queue))
  }

  /** Bytes that crossed a site's WAN link, read on the router's end. */
  async wanCounters (site: number): Promise<WanCounters> {
    const { stdout } = await run('ip', ['-j', '-s', '-n', `${this.name}-s${site}-r`, 'link', 'show', 'dev', WAN_DEVICE])
    const [link] = JSON.parse(stdout) as Array<{ stats64: { rx: { bytes: number }, tx: { bytes: number } } }>
    return { rxBytes: link.stats64.rx.bytes, txBytes: link.stats64.tx.bytes }
  }

  /** Cuts a site's WAN link (its router's end goes down) or brings it back: the site's LAN keeps working. */
  async setWan (site: number, up: boolean): Promise<void> {
    await ip('-n', `${this.name}-s${site}-r`, 'link', 'set', WAN_DEVICE, up ? 'up' : 'down')
    // Taking the link down removed the route through it.
    if (up) await ip('-n', `${this.name}-s${site}-r`, 'route', 'replace', 'default', 'via', `10.77.${100 + site}.1`, 'dev', WAN_DEVICE)
  }

  /** Bytes a host's interface received and sent (everything it exchanged with peers and the WAN). */
  async hostCounters (host: LabHost): Promise<WanCounters> {
    const { stdout } = await run('ip', ['-j', '-s', '-n', host.ns, 'link', 'show', 'dev', host.device])
    const [link] = JSON.parse(stdout) as Array<{ stats64: { rx: { bytes: number }, tx: { bytes: number } } }>
    return { rxBytes: link.stats64.rx.bytes, txBytes: link.stats64.tx.bytes }
  }

  /** The command prefix that runs a program inside a namespace. */
  prefixFor (ns: string): string[] {
    return ['ip', 'netns', 'exec', ns]
  }

  /** Starts a long-lived program in a namespace; it is killed when the lab is destroyed. */
  spawn (ns: string, command: string, args: string[], options: { stdio?: Array<'ignore' | 'pipe' | 'inherit'> } = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, command, ...args], { stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'] })
    this.children.add(child)
    child.once('exit', () => { this.children.delete(child) })
    return child
  }

  /**
   * Makes a TCP service inside a namespace reachable from this process on
   * 127.0.0.1, without touching the host's network: a forwarder inside the
   * namespace listens on a unix socket, and a local listener pipes into it.
   */
  async exposeToHost (ns: string, host: string, port: number): Promise<{ port: number, url: string }> {
    const socketPath = join(tmpdir(), `${this.name}-${this.servers.length}.sock`)
    const forwarder = this.spawn(ns, process.execPath, [FORWARDER, socketPath, host, String(port)])
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('the forwarder did not start')) }, 15_000)
      forwarder.once('exit', code => { clearTimeout(timer); reject(new Error(`the forwarder exited with ${code}`)) })
      createInterface({ input: forwarder.stdout! }).once('line', () => { clearTimeout(timer); resolve() })
    })
    const server = createServer(client => {
      client.setNoDelay(true)
      const upstream = createConnection(socketPath)
      client.pipe(upstream).pipe(client)
      client.on('error', () => { upstream.destroy() })
      upstream.on('error', () => { client.destroy() })
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    this.servers.push(server)
    const local = (server.address() as { port: number }).port
    return { port: local, url: `http://127.0.0.1:${local}` }
  }

  /** Kills every process in the lab's namespaces, then deletes them. Safe to call more than once. */
  async destroy (): Promise<void> {
    this.destroyed ??= (async () => {
      for (const server of this.servers) server.close()
      for (const child of this.children) child.kill('SIGTERM')
      await killIn(this.namespaces)
      for (const ns of [...this.namespaces].reverse()) await ip('netns', 'del', ns).catch(() => {})
      live.delete(this)
    })()
    await this.destroyed
  }

  /** The same, synchronously: for the process's exit handler. */
  destroySync (): void {
    for (const ns of this.namespaces) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(line => line.trim() !== '')
        for (const pid of pids) { try { process.kill(Number(pid), 'SIGKILL') } catch {} }
      } catch {}
    }
    for (const ns of [...this.namespaces].reverse()) {
      try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }) } catch {}
    }
    live.delete(this)
  }
}
