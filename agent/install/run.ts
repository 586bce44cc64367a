import { open } from 'node:fs/promises'
import { exitOutcome, type ExitCodeMap, type ExitOutcome } from '../../protocol/index.js'
import { InstallFailedError } from '../errors.js'
import type { CommandLine } from './commands.js'
import { runProcess } from './process.js'

export interface InstallOutcome {
  outcome: ExitOutcome
  exitCode: number | null
  outputTail: string
  message: string
}

export interface RunInstallerInit {
  line: CommandLine
  cwd: string
  env: NodeJS.ProcessEnv
  timeoutSeconds: number
  exitCodes?: ExitCodeMap
  /** A log the installer writes (msiexec /l*v): its tail replaces an empty output. */
  logFile?: string
  /** What runs, for messages: `the installer`, `the uninstaller`. */
  what: string
  signal?: AbortSignal
}

/** The last bytes of a log file, decoded as UTF-16 when it starts with a byte order mark (msiexec logs). */
export async function logTail (path: string, bytes = 2000): Promise<string> {
  try {
    const handle = await open(path, 'r')
    try {
      const { size } = await handle.stat()
      const head = Buffer.alloc(2)
      await handle.read(head, 0, 2, 0)
      const utf16 = head[0] === 0xff && head[1] === 0xfe
      const length = Math.min(size, utf16 ? bytes * 2 : bytes)
      const buffer = Buffer.alloc(length)
      await handle.read(buffer, 0, length, size - length)
      return utf16 ? buffer.subarray(length % 2).toString('utf16le') : buffer.toString('utf8')
    } finally {
      await handle.close()
    }
  } catch {
    return ''
  }
}

/** Runs an installer or uninstaller with a timeout and maps its exit code with the package's mapping. */
export async function runInstaller (init: RunInstallerInit): Promise<InstallOutcome> {
  const result = await runProcess({
    command: init.line.command,
    args: init.line.args,
    cwd: init.cwd,
    env: init.env,
    timeoutMs: init.timeoutSeconds * 1000,
    ...(init.line.verbatim === true ? { verbatim: true } : {}),
    ...(init.signal !== undefined ? { signal: init.signal } : {})
  })
  let outputTail = result.outputTail
  if (outputTail.trim() === '' && init.logFile !== undefined) outputTail = await logTail(init.logFile)
  if (result.timedOut) {
    throw new InstallFailedError(`${init.what} did not finish within ${init.timeoutSeconds} s and was stopped`, result.exitCode, outputTail)
  }
  const outcome = exitOutcome(result.exitCode, init.exitCodes)
  const ended = result.exitCode !== null ? `exited with ${result.exitCode}` : `was killed by ${result.signal ?? 'a signal'}`
  return { outcome, exitCode: result.exitCode, outputTail, message: `${init.what} ${ended}` }
}
