import { spawn } from 'node:child_process'
import { OUTPUT_TAIL_BYTES } from '../../protocol/index.js'

export interface RunInit {
  command: string
  args: string[]
  cwd: string
  env?: NodeJS.ProcessEnv
  timeoutMs: number
  signal?: AbortSignal
  /** Grace period between SIGTERM and SIGKILL. @default 5000 */
  killGraceMs?: number
  /** Windows: pass the arguments as they are, already quoted (cmd.exe lines). */
  verbatim?: boolean
  /** Keep the whole standard output (bounded by MAX_CAPTURED_STDOUT_BYTES) for a parser. @default false */
  captureStdout?: boolean
}

/** The user and group child processes are started as; unset: the agent's own. */
let childCredentials: { uid: number, gid: number } | undefined

/**
 * Starts every installer, detection command and reboot command as this user
 * from now on. An agent that runs as its own user with CAP_SETUID, CAP_SETGID
 * and CAP_KILL (the agent packages' systemd unit) starts them as root, which
 * dpkg, rpm and most installers require, and can still stop them.
 */
export function runChildProcessesAs (credentials: { uid: number, gid: number } | undefined): void {
  childCredentials = credentials
}

/** Bound on the standard output kept for parsing (reg query of every installed product, pkgutil --files). */
export const MAX_CAPTURED_STDOUT_BYTES = 16 * 1024 * 1024

export interface RunResult {
  exitCode: number | null
  signal: NodeJS.Signals | null
  timedOut: boolean
  /** The last bytes of standard output and standard error, interleaved. */
  outputTail: string
  /** With captureStdout: the standard output, cut at MAX_CAPTURED_STDOUT_BYTES. */
  stdout?: string
}

/** Keeps the last `limit` bytes written to it. */
class TailBuffer {
  private parts: Buffer[] = []
  private size = 0
  constructor (private readonly limit: number) {}

  push (data: Buffer): void {
    this.parts.push(data)
    this.size += data.byteLength
    while (this.size - this.parts[0].byteLength >= this.limit) {
      this.size -= this.parts[0].byteLength
      this.parts.shift()
    }
  }

  toString (): string {
    const all = Buffer.concat(this.parts)
    return all.subarray(Math.max(0, all.byteLength - this.limit)).toString('utf8')
  }
}

/**
 * Runs a program without a shell, in its own process group so that a
 * timeout ends everything it started, and keeps the tail of its output.
 */
export async function runProcess (init: RunInit): Promise<RunResult> {
  const tail = new TailBuffer(OUTPUT_TAIL_BYTES)
  const child = spawn(init.command, init.args, {
    cwd: init.cwd,
    env: init.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: process.platform !== 'win32',
    windowsVerbatimArguments: init.verbatim === true,
    windowsHide: true,
    ...(childCredentials !== undefined && process.platform !== 'win32' ? childCredentials : {})
  })
  const captured: Buffer[] = []
  let capturedBytes = 0
  child.stdout.on('data', (data: Buffer) => {
    tail.push(data)
    if (init.captureStdout === true && capturedBytes < MAX_CAPTURED_STDOUT_BYTES) {
      captured.push(data.subarray(0, MAX_CAPTURED_STDOUT_BYTES - capturedBytes))
      capturedBytes += data.byteLength
    }
  })
  child.stderr.on('data', (data: Buffer) => { tail.push(data) })
  let timedOut = false
  let killTimer: NodeJS.Timeout | undefined
  const terminate = (): void => {
    const kill = (signal: NodeJS.Signals): void => {
      try {
        if (process.platform !== 'win32' && child.pid !== undefined) process.kill(-child.pid, signal)
        else child.kill(signal)
      } catch {}
    }
    kill('SIGTERM')
    killTimer = setTimeout(() => { kill('SIGKILL') }, init.killGraceMs ?? 5000)
  }
  const timer = setTimeout(() => { timedOut = true; terminate() }, init.timeoutMs)
  const onAbort = (): void => { terminate() }
  init.signal?.addEventListener('abort', onAbort, { once: true })
  try {
    return await new Promise<RunResult>((resolve, reject) => {
      child.once('error', reject)
      child.once('close', (exitCode, signal) => {
        const result: RunResult = { exitCode, signal, timedOut, outputTail: tail.toString() }
        if (init.captureStdout === true) result.stdout = Buffer.concat(captured).toString('utf8')
        resolve(result)
      })
    })
  } finally {
    clearTimeout(timer)
    clearTimeout(killTimer)
    init.signal?.removeEventListener('abort', onAbort)
  }
}
