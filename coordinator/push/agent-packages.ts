import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { z } from 'zod'

/** The file `npm run package:agent` writes beside the agent packages, naming each with its hash. */
export const AGENT_PACKAGES_MANIFEST = 'manifest.json'

export const agentPackageFormats = ['deb', 'rpm'] as const
export type AgentPackageFormat = typeof agentPackageFormats[number]

export const agentPackagesManifestSchema = z.object({
  name: z.literal('meshdeploy-agent'),
  version: z.string().min(1).max(100),
  revision: z.number().int().min(1),
  builtAt: z.string(),
  /** The Node.js runtime the executable carries. */
  node: z.string(),
  packages: z.array(z.object({
    file: z.string().regex(/^[A-Za-z0-9._+~-]+$/, 'a file name in the same folder'),
    format: z.enum(agentPackageFormats),
    /** Node's name of the architecture: x64, arm64. */
    arch: z.string().min(1).max(20),
    sizeBytes: z.number().int().min(0),
    sha256: z.string().regex(/^[0-9a-f]{64}$/)
  })).max(100),
  /** Service definitions for platforms whose installers cannot be built here. */
  serviceDefinitions: z.array(z.object({ platform: z.string(), file: z.string() })).max(20).optional()
}).strict()

export type AgentPackagesManifest = z.infer<typeof agentPackagesManifestSchema>
export type AgentPackage = AgentPackagesManifest['packages'][number]

/** Reads the agent packages a build left in a folder; undefined when there are none. */
export async function readAgentPackages (folder: string): Promise<AgentPackagesManifest | undefined> {
  let text: string
  try {
    text = await readFile(join(folder, AGENT_PACKAGES_MANIFEST), 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  return agentPackagesManifestSchema.parse(JSON.parse(text))
}

/** `uname -m` → Node's architecture names. */
export function archOfMachine (machine: string): string | undefined {
  switch (machine.trim()) {
    case 'x86_64': case 'amd64': return 'x64'
    case 'aarch64': case 'arm64': return 'arm64'
    default: return undefined
  }
}

/** `dist-packages/` of the checkout the coordinator runs from, where `npm run package:agent` writes. */
export function defaultAgentPackagesDir (): string {
  let folder = import.meta.dirname
  for (;;) {
    if (existsSync(join(folder, 'package.json')) && existsSync(join(folder, 'coordinator'))) return join(folder, 'dist-packages')
    const parent = dirname(folder)
    if (parent === folder) return join(process.cwd(), 'dist-packages')
    folder = parent
  }
}
