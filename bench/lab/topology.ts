import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
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
 * links are shaped with htb on both ends (egress of each end: the hq end
 * paces downloads into the site, the router end uploads). Delay and loss
 * come from netem where a kernel has it; this one has none, so a user-space
 * delay line (delayline.py, a TUN device the router policy-routes its
 * forwarded packets through) adds them, once per direction. LAN ports can
 * be shaped the same way (the bridge port towards the host, the host's own
 * interface away from it).
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
  /** One-way WAN delay, added in each direction (host-to-hq RTT is twice this). @default 0 */
  wanDelayMs?: number
  /** Packets lost per direction on the WAN, percent. @default 0 */
  wanLossPercent?: number
  /** LAN rate of every host port per direction, Mbit/s; absent: unshaped. */
  lanMbit?: number
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
  /** Packets as the interface counts them (a GSO super-packet counts once, with one set of headers). */
  rxPackets?: number
  txPackets?: number
}

/** The compiled forwarder, whether this module runs from dist/ or from source (tests). */
const FORWARDER = fileURLToPath(import.meta.url.endsWith('.ts') ? new URL('../../dist/bench/lab/forwarder.js', import.meta.url) : new URL('./forwarder.js', import.meta.url))
/** The delay line is not compiled: it lives beside this file's source. */
const DELAY_LINE = fileURLToPath(import.meta.url.endsWith('.ts') ? new URL('./delayline.py', import.meta.url) : new URL('../../../bench/lab/delayline.py', import.meta.url))
/** Debian's interpreter: a python3 earlier on PATH (pyenv) may resolve differently per folder. */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'

const HQ_ADDRESS = '10.77.0.1'
const WAN_DEVICE = 'mdmwan'
const LAN_BRIDGE = 'mdmbr'
const HOST_DEVICE = 'mdm0'
const DELAY_DEVICE = 'mdmdly'
/** The routing table that sends a router's forwarded packets through its delay line. */
const DELAY_TABLE = '100'
/** How long the delay line may take to create its device. */
const DELAY_LINE_START_MS = 15_000

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

/** Whether WAN delay and loss can be added: the delay line needs python3 and /dev/net/tun. */
export async function delayLineAvailable (): Promise<{ ok: true } | { ok: false, reason: string }> {
  if (!existsSync('/dev/net/tun')) return { ok: false, reason: '/dev/net/tun is missing' }
  try {
    await run(PYTHON, ['--version'])
  } catch (error) {
    return { ok: false, reason: `python3 is unavailable: ${(error as Error).message}` }
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
  private readonly anchors = new Map<string, number>()
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
    await this.addAnchor(ns)
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
      if ((init.wanDelayMs ?? 0) > 0 || (init.wanLossPercent ?? 0) > 0) await this.addDelayLine(router, init.wanDelayMs ?? 0, init.wanLossPercent ?? 0)
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
        if (init.lanMbit !== undefined) {
          await this.shape(router, port, init.lanMbit, 20)
          await this.shape(ns, HOST_DEVICE, init.lanMbit, 20)
        }
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

  /**
   * Starts the site's delay line and routes every packet the router forwards
   * between its WAN and its LAN through it (traffic inside the LAN is
   * bridged, never routed, so it is not delayed).
   */
  private async addDelayLine (router: string, delayMs: number, lossPercent: number): Promise<void> {
    const line = this.spawn(router, PYTHON, [DELAY_LINE, '--dev', DELAY_DEVICE, '--delay-ms', String(delayMs), '--loss', String(lossPercent)])
    line.stderr!.resume()
    await new Promise<void>((resolve, reject) => {
      const exited = (code: number | null): void => { clearTimeout(timer); reject(new Error(`the delay line in ${router} exited with ${code}`)) }
      const timer = setTimeout(() => { line.off('exit', exited); reject(new Error(`the delay line in ${router} did not start`)) }, DELAY_LINE_START_MS)
      line.once('exit', exited)
      createInterface({ input: line.stdout! }).once('line', () => { clearTimeout(timer); line.off('exit', exited); resolve() })
    })
    await ip('-n', router, 'link', 'set', DELAY_DEVICE, 'up')
    await sysctl(router, `net.ipv6.conf.${DELAY_DEVICE}.disable_ipv6=1`)
    await ip('-n', router, 'route', 'add', 'default', 'dev', DELAY_DEVICE, 'table', DELAY_TABLE)
    // Re-injected packets are routed normally; what arrives from the WAN or the LAN goes through the line first.
    await ip('-n', router, 'rule', 'add', 'pref', '1000', 'iif', DELAY_DEVICE, 'lookup', 'main')
    await ip('-n', router, 'rule', 'add', 'pref', '1100', 'iif', WAN_DEVICE, 'lookup', DELAY_TABLE)
    await ip('-n', router, 'rule', 'add', 'pref', '1200', 'iif', LAN_BRIDGE, 'lookup', DELAY_TABLE)
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

  /**
   * Interface counters of a namespace read from /proc, without starting a
   * process per read: cheap enough to sample every few hundred milliseconds.
   * `device` absent: every interface of the namespace but loopback, summed.
   */
  counters (ns: string, device?: string): Required<WanCounters> {
    const text = readFileSync(`/proc/${this.anchor(ns)}/net/dev`, 'utf8')
    const out: Required<WanCounters> = { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 }
    for (const line of text.split('\n').slice(2)) {
      const colon = line.indexOf(':')
      if (colon < 0) continue
      const name = line.slice(0, colon).trim()
      if (device !== undefined ? name !== device : name === 'lo') continue
      const fields = line.slice(colon + 1).trim().split(/\s+/)
      out.rxBytes += Number(fields[0])
      out.rxPackets += Number(fields[1])
      out.txBytes += Number(fields[8])
      out.txPackets += Number(fields[9])
    }
    return out
  }

  /** The counters of a site's WAN link (router end) from /proc. */
  wanCountersNow (site: number): Required<WanCounters> {
    return this.counters(`${this.name}-s${site}-r`, WAN_DEVICE)
  }

  /** The counters of a host's LAN interface from /proc. */
  hostCountersNow (host: LabHost): Required<WanCounters> {
    return this.counters(host.ns, host.device)
  }

  private anchor (ns: string): number {
    const pid = this.anchors.get(ns)
    if (pid === undefined) throw new Error(`${ns} is not a namespace of this lab`)
    return pid
  }

  /**
   * A process that lives in the namespace for as long as the lab: its /proc
   * entry shows the namespace's network. It counts once `ip netns exec` has
   * entered the namespace and exec'd (before that /proc shows the host's).
   */
  private async addAnchor (ns: string): Promise<void> {
    const child = this.spawn(ns, 'sleep', ['infinity'], { stdio: ['ignore', 'ignore', 'ignore'] })
    const pid = child.pid
    if (pid === undefined) throw new Error(`cannot start a process in ${ns}`)
    for (let attempt = 0; ; attempt++) {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
      if (cmdline.startsWith('sleep')) break
      if (attempt > 1000 || child.exitCode !== null) throw new Error(`the anchor process of ${ns} did not start`)
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    this.anchors.set(ns, pid)
  }

  /** Runs a command inside a namespace to its end; its output. */
  async exec (ns: string, command: string, args: string[], options: { timeoutMs?: number } = {}): Promise<{ stdout: string, stderr: string }> {
    return await run('ip', ['netns', 'exec', ns, command, ...args], { timeout: options.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024 })
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
