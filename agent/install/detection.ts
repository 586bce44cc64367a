import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { sha256OfFile, type DetectionRule, type Platform } from '../../protocol/index.js'
import { runProcess, type RunResult } from './process.js'
import { underInstallRoot } from './paths.js'
import {
  linuxPackageQueryCommand, pkgInfoCommand, plistAsXmlCommand, registryQueryCommand, UNINSTALL_KEYS, type CommandLine
} from './commands.js'
import { findProducts, parseRegQuery, type RegistryEntry } from './windows.js'
import { parsePkgInfo, parsePlistStrings } from './macos.js'
import { parsePackageQuery } from './linux-packages.js'
import { currentPlatform } from '../platform.js'

export interface DetectionResult {
  installed: boolean
  detail: string
  /** The rule could not be evaluated (another platform, a tool missing): the state is not known. */
  unknown?: boolean
}

export interface DetectionContext {
  installRoot: string
  /** Root that Linux package managers work under ('/' for the system). */
  packageRoot: string
  /** @default the running platform */
  platform?: Platform
  signal?: AbortSignal
}

const DEFAULT_COMMAND_TIMEOUT_SECONDS = 60
const QUERY_TIMEOUT_MS = 60_000

/** What an install result says when there is no rule (Feilian: "cannot be determined"). */
export const NO_RULE_DETAIL = 'install state unknown: the package has no detection rule'

async function query (line: CommandLine, context: DetectionContext, timeoutMs = QUERY_TIMEOUT_MS): Promise<RunResult & { stdout: string }> {
  const result = await runProcess({
    command: line.command,
    args: line.args,
    cwd: context.installRoot,
    env: { ...process.env, MESHDEPLOY_INSTALL_ROOT: context.installRoot, LC_ALL: 'C' },
    timeoutMs,
    captureStdout: true,
    ...(line.verbatim === true ? { verbatim: true } : {}),
    ...(context.signal !== undefined ? { signal: context.signal } : {})
  })
  return result as RunResult & { stdout: string }
}

/** Every product registered in the Uninstall keys (64-bit, 32-bit and per user). */
export async function registryEntries (context: DetectionContext): Promise<RegistryEntry[]> {
  const entries: RegistryEntry[] = []
  for (const key of UNINSTALL_KEYS) {
    const result = await query(registryQueryCommand(key), context)
    // A key that does not exist (no 32-bit products) makes reg exit 1: nothing there.
    if (result.exitCode === 0) entries.push(...parseRegQuery(result.stdout))
  }
  return entries
}

function wrongPlatform (rule: DetectionRule, platform: Platform): DetectionResult {
  return { installed: false, unknown: true, detail: `a ${rule.type} rule cannot be checked on ${platform}` }
}

/** Evaluates a detection rule on this device. */
export async function detect (rule: DetectionRule, context: DetectionContext): Promise<DetectionResult> {
  const platform = context.platform ?? currentPlatform()
  switch (rule.type) {
    case 'file': {
      const path = underInstallRoot(context.installRoot, rule.path)
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
        const result = await query({ command, args }, context, (rule.timeoutSeconds ?? DEFAULT_COMMAND_TIMEOUT_SECONDS) * 1000)
        if (result.timedOut) return { installed: false, unknown: true, detail: `${command} timed out` }
        return { installed: result.exitCode === 0, detail: `${command} exited ${result.exitCode ?? result.signal}` }
      } catch (error) {
        return { installed: false, unknown: true, detail: `${command} could not run: ${(error as Error).message}` }
      }
    }
    case 'windows-registry': {
      if (platform !== 'windows') return wrongPlatform(rule, platform)
      const products = findProducts(await registryEntries(context), rule.displayName, rule.publisher)
      const who = `${rule.displayName}${rule.publisher !== undefined ? ` by ${rule.publisher}` : ''}`
      if (products.length === 0) return { installed: false, detail: `${who} is not in the Uninstall keys` }
      if (rule.version === undefined) return { installed: true, detail: `${who} is installed (${products[0].values.DisplayVersion ?? 'no version'})` }
      const match = products.find(product => product.values.DisplayVersion === rule.version)
      return match !== undefined
        ? { installed: true, detail: `${who} ${rule.version} is installed` }
        : { installed: false, detail: `${who} is installed at ${products.map(product => product.values.DisplayVersion ?? '?').join(', ')}, not ${rule.version}` }
    }
    case 'macos-bundle': {
      if (platform !== 'macos') return wrongPlatform(rule, platform)
      if (rule.appPath !== undefined) {
        const plist = join(rule.appPath, 'Contents', 'Info.plist')
        const result = await query(plistAsXmlCommand(plist), context)
        if (result.exitCode !== 0) return { installed: false, detail: `${rule.appPath} has no readable Info.plist` }
        const values = parsePlistStrings(result.stdout)
        if (values.CFBundleIdentifier !== rule.bundleId) return { installed: false, detail: `${rule.appPath} is ${values.CFBundleIdentifier ?? 'an unnamed bundle'}, not ${rule.bundleId}` }
        const version = values.CFBundleShortVersionString ?? values.CFBundleVersion
        if (rule.version !== undefined && version !== rule.version) return { installed: false, detail: `${rule.bundleId} is at ${version ?? 'no version'}, not ${rule.version}` }
        return { installed: true, detail: `${rule.appPath} is ${rule.bundleId} ${version ?? ''}`.trim() }
      }
      const result = await query(pkgInfoCommand(rule.bundleId), context)
      const receipt = result.exitCode === 0 ? parsePkgInfo(result.stdout) : undefined
      if (receipt === undefined) return { installed: false, detail: `no package receipt for ${rule.bundleId}` }
      if (rule.version !== undefined && receipt.version !== rule.version) return { installed: false, detail: `${rule.bundleId} is at ${receipt.version}, not ${rule.version}` }
      return { installed: true, detail: `${rule.bundleId} ${receipt.version} is installed` }
    }
    case 'linux-package': {
      if (platform !== 'linux') return wrongPlatform(rule, platform)
      let result
      try {
        result = await query(linuxPackageQueryCommand(rule.manager, rule.name, context.packageRoot), context)
      } catch (error) {
        return { installed: false, unknown: true, detail: `${rule.manager} could not run: ${(error as Error).message}` }
      }
      const state = parsePackageQuery(rule.manager, result.exitCode, result.stdout)
      if (!state.installed) return { installed: false, detail: `${rule.name} is not installed (${rule.manager})` }
      if (rule.version !== undefined && state.version !== rule.version) return { installed: false, detail: `${rule.name} is at ${state.version ?? 'an unknown version'}, not ${rule.version}` }
      return { installed: true, detail: `${rule.name} ${state.version ?? ''} is installed (${rule.manager})`.replace('  ', ' ') }
    }
  }
}
