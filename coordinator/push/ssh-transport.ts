import { Readable } from 'node:stream'
import ssh2, { type ClientChannel } from 'ssh2'
import { OUTPUT_TAIL_BYTES } from '../../protocol/index.js'
import { sshFingerprint } from '../credentials/ssh-keys.js'
import {
  AuthenticationRefusedError, ConnectionLostError, HostUnreachableError, MAX_COMMAND_STDOUT_BYTES, PushError,
  type CommandOptions, type CommandResult, type OpenOptions, type PushLogin, type PushTarget, type PushTransport, type RemoteSession
} from './transport.js'

/** Keep-alives find a host that vanished mid-install: 3 unanswered, 15 s apart. */
const KEEPALIVE_INTERVAL_MS = 15_000
const KEEPALIVE_COUNT_MAX = 3

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'EPIPE', 'EADDRNOTAVAIL'])

/** The algorithm named at the start of an SSH public key blob (ssh-ed25519, ssh-rsa, …). */
function keyTypeOf (blob: Buffer): string | undefined {
  if (blob.byteLength < 4) return undefined
  const length = blob.readUInt32BE(0)
  return length > 0 && length < 64 && blob.byteLength >= 4 + length ? blob.subarray(4, 4 + length).toString('latin1') : undefined
}

/** Keeps the last `limit` bytes written to it. */
class Tail {
  private parts: Buffer[] = []
  private size = 0
  constructor (private readonly limit: number) {}

  push (data: Buffer): void {
    this.parts.push(data)
    this.size += data.byteLength
    while (this.parts.length > 1 && this.size - this.parts[0].byteLength >= this.limit) this.size -= this.parts.shift()!.byteLength
  }

  toString (): string {
    const all = Buffer.concat(this.parts)
    return all.subarray(Math.max(0, all.byteLength - this.limit)).toString('utf8')
  }
}

class SshSession implements RemoteSession {
  private lost?: Error
  private readonly channels = new Set<ClientChannel>()

  constructor (private readonly client: ssh2.Client, private readonly target: PushTarget) {
    client.on('error', error => { this.lost ??= error })
    client.on('close', () => {
      this.lost ??= new Error('the connection closed')
      for (const channel of this.channels) channel.destroy()
    })
  }

  async exec (command: string, options: CommandOptions): Promise<CommandResult> {
    if (this.lost !== undefined) throw new ConnectionLostError(`${this.target.address}: ${this.lost.message}`)
    const channel = await new Promise<ClientChannel>((resolve, reject) => {
      this.client.exec(command, (error, opened) => {
        if (error !== undefined && error !== null) reject(new ConnectionLostError(`${this.target.address}: cannot start a command: ${error.message}`))
        else resolve(opened)
      })
    })
    this.channels.add(channel)
    const stdout: Buffer[] = []
    let stdoutBytes = 0
    const tail = new Tail(OUTPUT_TAIL_BYTES)
    let timedOut = false
    return await new Promise<CommandResult>((resolve, reject) => {
      const end = (): void => {
        channel.close()
        channel.destroy()
      }
      const timer = setTimeout(() => { timedOut = true; end() }, options.timeoutMs)
      const onAbort = (): void => { end() }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      channel.on('data', (data: Buffer) => {
        tail.push(data)
        if (stdoutBytes < MAX_COMMAND_STDOUT_BYTES) {
          stdout.push(data.subarray(0, MAX_COMMAND_STDOUT_BYTES - stdoutBytes))
          stdoutBytes += data.byteLength
        }
      })
      channel.stderr.on('data', (data: Buffer) => { tail.push(data) })
      channel.on('error', () => {})
      channel.once('close', (code: number | null | undefined, signal?: string) => {
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
        this.channels.delete(channel)
        if (options.signal?.aborted === true) {
          reject(new PushError('cancelled', 'cancelled while a command ran'))
          return
        }
        if (this.lost !== undefined && !timedOut && typeof code !== 'number') {
          reject(new ConnectionLostError(`${this.target.address}: the connection was lost while a command ran (${this.lost.message})`))
          return
        }
        resolve({
          exitCode: typeof code === 'number' ? code : null,
          ...(typeof signal === 'string' ? { signal } : {}),
          timedOut,
          stdout: Buffer.concat(stdout).toString('utf8'),
          outputTail: tail.toString()
        })
      })
      if (options.stdin === undefined) channel.end()
      else if (typeof options.stdin === 'string') channel.end(options.stdin)
      else {
        const source: Readable = options.stdin
        source.on('error', error => {
          tail.push(Buffer.from(`\n(the coordinator could not read what it sends: ${error.message})\n`))
          end()
        })
        source.pipe(channel)
      }
    })
  }

  close (): void {
    this.client.end()
  }
}

/**
 * Push installs over SSH with the ssh2 library: key or password logins
 * (keyboard-interactive answered with the password too), the host's key
 * checked before any credential is sent, keep-alives, and a timeout on the
 * connection and on every command.
 */
export class SshTransport implements PushTransport {
  readonly name = 'ssh'

  async open (target: PushTarget, login: PushLogin, options: OpenOptions): Promise<RemoteSession> {
    const client = new ssh2.Client()
    let keyRefusal: unknown
    const password = login.secret.type === 'account' ? login.secret.password : undefined
    return await new Promise<RemoteSession>((resolve, reject) => {
      let settled = false
      const settle = (outcome: () => void): void => {
        if (settled) return
        settled = true
        options.signal?.removeEventListener('abort', onAbort)
        outcome()
      }
      const onAbort = (): void => { settle(() => { client.end(); reject(new PushError('cancelled', 'cancelled while connecting')) }) }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      client.once('ready', () => { settle(() => { resolve(new SshSession(client, target)) }) })
      client.on('error', (error: Error & { level?: string, code?: string }) => {
        settle(() => {
          client.end()
          reject(this.classify(error, keyRefusal, target, login.user, options.connectTimeoutMs))
        })
      })
      client.on('close', () => { settle(() => { reject(new ConnectionLostError(`${target.address}:${target.port} closed the connection before the login ended`)) }) })
      client.on('keyboard-interactive', (_name, _instructions, _language, prompts, finish) => { finish(prompts.map(() => password ?? '')) })
      try {
        client.connect({
          host: target.address,
          port: target.port,
          username: login.user,
          readyTimeout: options.connectTimeoutMs,
          keepaliveInterval: KEEPALIVE_INTERVAL_MS,
          keepaliveCountMax: KEEPALIVE_COUNT_MAX,
          ...(login.secret.type === 'ssh-key'
            ? { privateKey: login.secret.privateKey, ...(login.secret.passphrase !== undefined ? { passphrase: login.secret.passphrase } : {}) }
            : { password: login.secret.password, tryKeyboard: true }),
          hostVerifier: (key: Buffer, verify: (valid: boolean) => void) => {
            const keyType = keyTypeOf(key)
            options.checkHostKey({ fingerprint: sshFingerprint(key), ...(keyType !== undefined ? { keyType } : {}) }).then(() => { verify(true) }, error => {
              keyRefusal = error
              verify(false)
            })
          }
        })
      } catch (error) {
        settle(() => { reject(new PushError('internal-error', `the credential cannot be used: ${(error as Error).message}`)) })
      }
    })
  }

  private classify (error: Error & { level?: string, code?: string }, keyRefusal: unknown, target: PushTarget, user: string, connectTimeoutMs: number): Error {
    if (keyRefusal !== undefined) return keyRefusal as Error
    const where = `${target.address}:${target.port}`
    if (error.level === 'client-authentication') return new AuthenticationRefusedError(`${where} refused the login of ${user}`)
    if (error.level === 'client-timeout') return new HostUnreachableError(`${where} did not complete an SSH handshake within ${Math.round(connectTimeoutMs / 1000)} s`)
    if (error.code !== undefined && UNREACHABLE_CODES.has(error.code)) return new HostUnreachableError(`${where} is unreachable: ${error.code}${error.message.includes(error.code) ? '' : ` (${error.message})`}`)
    if (error.level === 'client-socket') return new HostUnreachableError(`${where}: ${error.message}`)
    return new ConnectionLostError(`${where}: ${error.message}`)
  }
}
