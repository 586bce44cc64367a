import type { Architecture, Platform } from '../protocol/index.js'

export function currentPlatform (): Platform {
  switch (process.platform) {
    case 'win32': return 'windows'
    case 'darwin': return 'macos'
    case 'linux': return 'linux'
    default: return 'any'
  }
}

export function currentArch (): Architecture {
  switch (process.arch) {
    case 'x64': return 'x64'
    case 'arm64': return 'arm64'
    default: return 'any'
  }
}

/** Why a package cannot run here, or undefined when it can. */
export function applicabilityProblem (pkg: { platform: Platform, arch: Architecture, name: string }, platform: Platform = currentPlatform(), arch: Architecture = currentArch()): string | undefined {
  if (pkg.platform !== 'any' && pkg.platform !== platform) return `${pkg.name} is a ${pkg.platform} package; this device runs ${platform}`
  if (pkg.arch !== 'any' && pkg.arch !== arch) return `${pkg.name} is built for ${pkg.arch}; this device is ${arch}`
  return undefined
}
