import { execFile, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Lab } from '../../bench/lab/topology.js'

const run = promisify(execFile)

export const SSHD = '/usr/sbin/sshd'

/** Why an OpenSSH server cannot be started here, or undefined when it can. */
export async function sshServerMissing (): Promise<string | undefined> {
  for (const [path, name] of [[SSHD, 'openssh-server'], ['/usr/bin/ssh-keygen', 'openssh-client'], ['/usr/bin/sudo', 'sudo'], ['/usr/bin/unshare', 'util-linux']]) {
    if (!existsSync(path)) return `${path} is missing (apt-get install -y ${name})`
  }
  try {
    await run('openssl', ['version'])
  } catch {
    return 'openssl is missing (apt-get install -y openssl)'
  }
  return undefined
}

export interface TestUser {
  name: string
  uid: number
  /** Password logins (and sudo with it). */
  password?: string
  /** Public keys (OpenSSH one-line form) the user logs in with. */
  authorizedKeys?: string[]
  sudo: 'nopasswd' | 'password' | 'none'
}

export interface TestSshServerInit {
  lab: Lab
  ns: string
  address: string
  port: number
  /** A folder readable by every user (0755) for the server's files and the users' homes. */
  folder: string
  users: TestUser[]
}

/**
 * Debian's OpenSSH server in a network namespace, on its own port, with its
 * own host key and config. Its users, their passwords and sudo rights exist
 * only inside a private mount namespace (passwd, shadow, group and sudoers
 * bound over /etc's for the server and what it starts; a private /run for
 * its privilege separation): nothing of this machine's /etc or /run changes.
 */
export class TestSshServer {
  private child?: ChildProcess
  private log = ''
  hostKey = ''

  private constructor (private readonly init: TestSshServerInit) {}

  static async start (init: TestSshServerInit): Promise<TestSshServer> {
    const server = new TestSshServer(init)
    await server.writeFiles()
    await server.launch(await server.newHostKey('host_key_1'))
    return server
  }

  get folder (): string {
    return join(this.init.folder, 'sshd')
  }

  private async writeFiles (): Promise<void> {
    const folder = this.folder
    await mkdir(join(folder, 'keys'), { recursive: true, mode: 0o755 })
    await chmod(this.init.folder, 0o755)
    let passwd = await readFile('/etc/passwd', 'utf8')
    let shadow = await readFile('/etc/shadow', 'utf8')
    let group = await readFile('/etc/group', 'utf8')
    const sudoers = ['Defaults env_reset', 'Defaults !lecture', 'Defaults !fqdn', 'root ALL=(ALL:ALL) ALL']
    for (const user of this.init.users) {
      const home = join(this.init.folder, 'home', user.name)
      await mkdir(home, { recursive: true, mode: 0o755 })
      await chown(home, user.uid, user.uid)
      passwd += `${user.name}:x:${user.uid}:${user.uid}:push test user:${home}:/bin/sh\n`
      shadow += `${user.name}:${user.password !== undefined ? await this.hash(user.password) : '*'}:19000:0:99999:7:::\n`
      group += `${user.name}:x:${user.uid}:\n`
      await writeFile(join(folder, 'keys', user.name), (user.authorizedKeys ?? []).join('\n') + '\n', { mode: 0o644 })
      if (user.sudo === 'nopasswd') sudoers.push(`${user.name} ALL=(ALL:ALL) NOPASSWD: ALL`)
      if (user.sudo === 'password') sudoers.push(`${user.name} ALL=(ALL:ALL) ALL`)
    }
    await writeFile(join(folder, 'passwd'), passwd, { mode: 0o644 })
    await writeFile(join(folder, 'shadow'), shadow, { mode: 0o640 })
    await writeFile(join(folder, 'group'), group, { mode: 0o644 })
    await writeFile(join(folder, 'sudoers'), sudoers.join('\n') + '\n', { mode: 0o440 })
  }

  private async hash (password: string): Promise<string> {
    return await new Promise((resolve, reject) => {
      const child = execFile('openssl', ['passwd', '-6', '-stdin'], (error, stdout) => { if (error !== null) reject(error); else resolve(stdout.trim()) })
      child.stdin!.end(password + '\n')
    })
  }

  /** Makes a new host key; its SHA-256 fingerprint as ssh-keygen prints it. */
  async newHostKey (name: string): Promise<string> {
    const path = join(this.folder, name)
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `push test ${name}`, '-f', path])
    this.hostKey = path
    return path
  }

  async fingerprint (): Promise<string> {
    const { stdout } = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${this.hostKey}.pub`])
    return stdout.split(' ')[1]
  }

  private async launch (hostKey: string): Promise<void> {
    const folder = this.folder
    const config = join(folder, 'sshd_config')
    await writeFile(config, [
      `Port ${this.init.port}`, `ListenAddress ${this.init.address}`, `HostKey ${hostKey}`, `PidFile ${join(folder, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(folder, 'keys')}/%u`, 'StrictModes no', 'UsePAM no', 'PasswordAuthentication yes', 'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes', 'PermitRootLogin no', `AllowUsers ${this.init.users.map(user => user.name).join(' ')}`, 'MaxAuthTries 10', 'MaxStartups 100',
      'LogLevel VERBOSE', ''
    ].join('\n'))
    const binds = ['passwd', 'shadow', 'group', 'sudoers'].map(file => `mount --bind ${join(folder, file)} /etc/${file}`).join(' && ')
    const script = `${binds} && mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && exec ${SSHD} -D -e -f ${config}`
    const child = this.init.lab.spawn(this.init.ns, 'unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script])
    this.child = child
    this.log = ''
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`sshd did not start: ${this.log}`)) }, 15_000)
      child.stderr!.on('data', (data: Buffer) => {
        this.log += data.toString()
        if (this.log.includes('Server listening on')) { clearTimeout(timer); resolve() }
      })
      child.stdout!.resume()
      child.once('exit', code => { clearTimeout(timer); reject(new Error(`sshd exited with ${code}: ${this.log}`)) })
    })
  }

  /** What the server logged (authentication refusals among it). */
  get logText (): string {
    return this.log
  }

  /** Starts the server again with a new host key: the same host, another identity. */
  async restartWithNewKey (name: string): Promise<void> {
    await this.stop()
    await this.launch(await this.newHostKey(name))
  }

  async stop (): Promise<void> {
    const child = this.child
    if (child === undefined || child.exitCode !== null) return
    const pid = Number((await readFile(join(this.folder, 'sshd.pid'), 'utf8').catch(() => '')).trim())
    if (pid > 0) {
      try { process.kill(pid, 'SIGTERM') } catch {}
    }
    child.kill('SIGTERM')
    await new Promise(resolve => { if (child.exitCode !== null) resolve(undefined); else child.once('exit', resolve) })
  }
}
