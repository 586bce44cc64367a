import { stat } from 'node:fs/promises'
import { sha256OfFile, type DetectionRule } from '../../protocol/index.js'
import { runProcess } from './process.js'
import { underInstallRoot } from './paths.js'

export interface DetectionResult {
  installed: boolean
  detail: string
}

const DEFAULT_COMMAND_TIMEOUT_SECONDS = 60

/** Evaluates a detection rule on this device. */
export async function detect (rule: DetectionRule, installRoot: string, signal?: AbortSignal): Promise<DetectionResult> {
  switch (rule.type) {
    case 'file': {
      const path = underInstallRoot(installRoot, rule.path)
      try {
        const info = await stat(path)
        if (!info.isFile()) return { installed: false, detail: `${rule.path} is not a file` }
      } catch {
        return { installed: false, detail: `${rule.path} does not exist` }
      }
      if (rule.sha256 === undefined) return { installed: true, detail: `${rule.path} exists` }
      const actual = await sha256OfFile(path)
      return actual === rule.sha256
        ? { installed: true, detail: `${rule.path} exists with the expected SHA-256` }
        : { installed: false, detail: `${rule.path} exists but its SHA-256 is ${actual}, not ${rule.sha256}` }
    }
    case 'command': {
      const [command, ...args] = rule.command
      try {
        const result = await runProcess({
          command,
          args,
          cwd: installRoot,
          env: { ...process.env, MESHDEPLOY_INSTALL_ROOT: installRoot },
          timeoutMs: (rule.timeoutSeconds ?? DEFAULT_COMMAND_TIMEOUT_SECONDS) * 1000,
          ...(signal !== undefined ? { signal } : {})
        })
        if (result.timedOut) return { installed: false, detail: `${command} timed out` }
        return { installed: result.exitCode === 0, detail: `${command} exited ${result.exitCode ?? result.signal}` }
      } catch (error) {
        return { installed: false, detail: `${command} could not run: ${(error as Error).message}` }
      }
    }
  }
}
