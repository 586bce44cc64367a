import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { parse } from 'yaml'
import { inspectPrivateKey } from '../../coordinator/credentials/ssh-keys.js'
import { MAKE_WORK_FOLDER, PROBE_COMMAND, sudoCheckCommand } from '../../coordinator/push/posix.js'
import {
  AuthenticationRefusedError, HostUnreachableError, type CommandOptions, type CommandResult, type OpenOptions, type PushLogin,
  type PushTarget, type PushTransport, type RemoteSession
} from '../../coordinator/push/transport.js'

/** An account on a stub host. */
export interface StubUser {
  uid: number
  /** The fingerprint of the public key it accepts. */
  keyFingerprint?: string
  password?: string
  sudo: 'nopasswd' | 'password' | 'none'
}

/**
 * A host as the push installs see it through a transport: no sockets, a
 * shell that answers the commands the push sends (the probe, sudo checks,
 * file writes and hashes, the install scripts) and records them.
 */
export class StubHost {
  fingerprint: string
  readonly users = new Map<string, StubUser>()
  readonly files = new Map<string, Buffer>()
  readonly commands: string[] = []
  readonly stdins: string[] = []
  os = 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
  tools = ['dpkg', 'dpkg-deb', 'rpm', 'systemctl', 'sudo', 'timeout', 'sha256sum', 'mktemp', 'setsid', 'shutdown']
  /** Exit code of the install step, by how many installs ran before. */
  installExit: (installs: number) => number = () => 0
  /** What a detection command answers. */
  detection: { exitCode: number, stdout: string } = { exitCode: 1, stdout: '' }
  /** Runs when the agent's install script does: the stub enrolls with the token it finds in the config. */
  onAgentInstall?: (config: Record<string, any>) => Promise<void>
  installs = 0

  constructor (fingerprint: string) {
    this.fingerprint = fingerprint
  }
}

async function readAll (stdin: CommandOptions['stdin']): Promise<Buffer> {
  if (stdin === undefined) return Buffer.alloc(0)
  if (typeof stdin === 'string') return Buffer.from(stdin)
  const parts: Buffer[] = []
  for await (const part of stdin as Readable) parts.push(Buffer.from(part as Uint8Array))
  return Buffer.concat(parts)
}

function result (exitCode: number, stdout = '', stderr = ''): CommandResult {
  return { exitCode, timedOut: false, stdout, outputTail: `${stdout}${stderr}` }
}

class StubSession implements RemoteSession {
  closed = false
  constructor (private readonly host: StubHost, private readonly user: StubUser) {}

  async exec (command: string, options: CommandOptions): Promise<CommandResult> {
    if (options.signal?.aborted === true) throw new Error('aborted')
    const host = this.host
    host.commands.push(command)
    const stdin = await readAll(options.stdin)
    host.stdins.push(stdin.toString('utf8'))
    if (command === PROBE_COMMAND) {
      return result(0, `kernel=Linux\nmachine=x86_64\nuid=${this.user.uid}\n${host.tools.map(tool => `tool=${tool}\n`).join('')}--- os-release\n${host.os}`)
    }
    if (command === sudoCheckCommand(true)) return this.user.sudo !== 'none' && stdin.toString() === `${this.user.password ?? ''}\n` ? result(0) : result(1, '', 'Sorry, try again.\nsudo: 1 incorrect password attempt\n')
    if (command === sudoCheckCommand(false)) return this.user.sudo === 'nopasswd' ? result(0) : result(1, '', 'sudo: a password is required\n')
    if (command === MAKE_WORK_FOLDER) return result(0, '/tmp/meshdeploy-push.Stub0001\n')
    const write = /^umask 077; cat > (\S+)$/.exec(command)
    if (write !== null) {
      host.files.set(write[1], stdin)
      return result(0)
    }
    const hash = /^sha256sum (\S+)$/.exec(command)
    if (hash !== null) {
      const file = host.files.get(hash[1])
      return file === undefined ? result(1, '', 'No such file\n') : result(0, `${createHash('sha256').update(file).digest('hex')}  ${hash[1]}\n`)
    }
    if (command.startsWith('rm -rf -- ')) return result(0)
    // Everything else runs as root: the way in must be the user's.
    const rooted = this.user.uid === 0 ? command.startsWith('sh -c ') : this.user.sudo === 'nopasswd' ? command.startsWith('sudo -n -- ') : command.startsWith('sudo -S ') && stdin.toString() === `${this.user.password ?? ''}\n`
    if (!rooted) return result(1, '', 'sudo: a password is required\n')
    if (command.includes('dpkg-query') || command.includes('rpm --query') || command.includes('then sha256sum')) return result(host.detection.exitCode, host.detection.stdout)
    if (command.includes('meshdeploy-agent') && command.includes('agent.yaml')) {
      const config = parse(host.files.get('/tmp/meshdeploy-push.Stub0001/agent.yaml')?.toString() ?? '{}')
      await host.onAgentInstall?.(config)
      return result(host.installExit(host.installs++), 'Selecting previously unselected package meshdeploy-agent.\n')
    }
    if (command.includes('--install') || command.includes('rpm --upgrade') || command.includes('/bin/sh ')) return result(host.installExit(host.installs++), 'installing\n')
    if (command.includes('shutdown -r')) return result(0)
    if (command.includes('journalctl')) return result(0, 'agent: cannot reach the coordinator\n')
    return result(127, '', `stub: no answer for ${command.slice(0, 80)}\n`)
  }

  close (): void {
    this.closed = true
  }
}

/** A transport to stub hosts by `address:port`; any other host is unreachable. */
export class StubTransport implements PushTransport {
  readonly name = 'stub'
  readonly hosts = new Map<string, StubHost>()
  readonly logins: Array<{ host: string, user: string }> = []

  async open (target: PushTarget, login: PushLogin, options: OpenOptions): Promise<RemoteSession> {
    const host = this.hosts.get(`${target.address}:${target.port}`)
    if (host === undefined) throw new HostUnreachableError(`${target.address}:${target.port} is unreachable: EHOSTUNREACH`)
    await options.checkHostKey({ fingerprint: host.fingerprint, keyType: 'ssh-ed25519' })
    this.logins.push({ host: target.address, user: login.user })
    const user = host.users.get(login.user)
    const accepted = user !== undefined && (login.secret.type === 'account'
      ? user.password === login.secret.password
      : user.keyFingerprint === inspectPrivateKey(login.secret.privateKey, login.secret.passphrase).fingerprint)
    if (!accepted) throw new AuthenticationRefusedError(`${target.address}:${target.port} refused the login of ${login.user}`)
    return new StubSession(host, user)
  }
}

/** A fingerprint of the form hosts present. */
export function stubFingerprint (seed: string): string {
  return `SHA256:${createHash('sha256').update(seed).digest('base64').replace(/=+$/, '')}`
}
