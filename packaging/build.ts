import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { AGENT_VERSION } from '../agent/version.js'
import { AGENT_PACKAGES_MANIFEST, agentPackagesManifestSchema, type AgentPackage, type AgentPackagesManifest } from '../coordinator/push/agent-packages.js'
import { buildDeb, debFileName, type Compression } from './deb.js'
import { buildAgentExecutable, CHECKOUT, nativeAddonSource } from './executable.js'
import {
  COMMAND_LINK_PATH, COMMAND_LINK_TARGET, CONFIG_TEMPLATE_PATH, DEB_UNIT_PATH, EXECUTABLE_PATH, INSTALL_DIR, NATIVE_ADDON_PATH, NOTICES_PATH, RPM_UNIT_PATH
} from './layout.js'
import { thirdPartyNotices } from './notices.js'
import { buildRpm, rpmFileName } from './rpm.js'
import { renderDefaultAgentConfig, renderLaunchdPlist, renderPackagedUnit, renderWindowsService } from './service-definitions.js'
import type { TreeEntry } from './tree.js'

const run = promisify(execFile)

export type PackageFormat = 'deb' | 'rpm'

export interface BuildInit {
  /** @default <checkout>/dist-packages */
  outDir?: string
  /** @default 'best' */
  compression?: Compression
  /** Debian revision and RPM release. @default 1 */
  revision?: number
  /** @default ['deb', 'rpm'] */
  formats?: PackageFormat[]
  /** @default process.execPath */
  nodeBinary?: string
  /** @default true */
  strip?: boolean
  log?: (line: string) => void
}

export interface BuildResult {
  outDir: string
  manifest: AgentPackagesManifest
  /** Seconds each step took. */
  timings: Record<string, number>
  bundleBytes: number
  executableBytes: number
}

/** A build that produced something other than what it promised (a version mismatch, an executable that does not run). */
export class PackageBuildError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'PackageBuildError'
  }
}

async function sha256Of (file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** The files every agent package installs; the unit's place differs between Debian and RPM distributions. */
export function agentTree (init: { executable: string, nativeAddon: string, notices: string, unitPath: string }): TreeEntry[] {
  return [
    { type: 'directory', path: INSTALL_DIR, mode: 0o755 },
    { type: 'directory', path: `${INSTALL_DIR}/bin`, mode: 0o755 },
    { type: 'directory', path: `${INSTALL_DIR}/lib`, mode: 0o755 },
    { type: 'directory', path: `${INSTALL_DIR}/share`, mode: 0o755 },
    { type: 'directory', path: `${INSTALL_DIR}/share/doc`, mode: 0o755 },
    { type: 'file', path: EXECUTABLE_PATH, mode: 0o755, source: init.executable },
    { type: 'file', path: NATIVE_ADDON_PATH, mode: 0o644, source: init.nativeAddon },
    { type: 'text', path: CONFIG_TEMPLATE_PATH, mode: 0o644, content: renderDefaultAgentConfig() },
    { type: 'text', path: NOTICES_PATH, mode: 0o644, content: init.notices },
    { type: 'text', path: init.unitPath, mode: 0o644, content: renderPackagedUnit() },
    { type: 'symlink', path: COMMAND_LINK_PATH, target: COMMAND_LINK_TARGET }
  ]
}

/**
 * Builds the agent packages from this checkout: the agent as a single
 * executable (Node.js with the agent's bundle injected), a .deb and an .rpm
 * installing it under /opt/meshdeploy-agent with its systemd unit, the
 * Windows service definition and macOS launchd plist, and a manifest of
 * them with their hashes. The output folder is replaced only once all of it
 * is built.
 */
export async function buildAgentPackages (init: BuildInit = {}): Promise<BuildResult> {
  const log = init.log ?? (() => {})
  const outDir = resolve(init.outDir ?? join(CHECKOUT, 'dist-packages'))
  const compression = init.compression ?? 'best'
  const revision = init.revision ?? 1
  const formats = init.formats ?? ['deb', 'rpm']
  const nodeBinary = init.nodeBinary ?? process.execPath
  const arch = process.arch
  const project = JSON.parse(await readFile(join(CHECKOUT, 'package.json'), 'utf8')) as { version: string, license: string }
  if (project.version !== AGENT_VERSION) throw new PackageBuildError(`package.json says ${project.version} but the agent reports ${AGENT_VERSION} (agent/version.ts): make them agree`)
  const nodeVersion = (await run(nodeBinary, ['--version'])).stdout.trim()
  const timings: Record<string, number> = {}
  const timed = async <T> (step: string, work: () => Promise<T>): Promise<T> => {
    const started = process.hrtime.bigint()
    const result = await work()
    timings[step] = Number(process.hrtime.bigint() - started) / 1e9
    log(`${step}: ${timings[step].toFixed(1)} s`)
    return result
  }

  const work = await mkdtemp(join(tmpdir(), 'md-package-'))
  const staging = `${outDir}.${process.pid}.tmp`
  try {
    await rm(staging, { recursive: true, force: true })
    await mkdir(staging, { recursive: true })
    const executable = await timed('executable', async () => await buildAgentExecutable({ workDir: work, outFile: join(work, 'meshdeploy-agent'), nodeBinary, strip: init.strip ?? true }))
    const nativeAddon = await nativeAddonSource()
    const notices = await thirdPartyNotices({ packageFolders: executable.packageFolders, nodeBinary, nodeVersion, projectLicense: project.license })

    // The executable must run from the tree it ships in (its addon beside it) and name its version.
    await timed('smoke-test', async () => {
      const tree = join(work, 'smoke')
      const { writeTree } = await import('./tree.js')
      await writeTree(tree, agentTree({ executable: executable.executable, nativeAddon, notices: '', unitPath: DEB_UNIT_PATH }).filter(entry => entry.type !== 'text'))
      const { stdout } = await run(join(tree, EXECUTABLE_PATH), ['--version'], { timeout: 30_000 })
      if (stdout.trim() !== AGENT_VERSION) throw new PackageBuildError(`the built executable answers --version with ${JSON.stringify(stdout.trim())}, not ${AGENT_VERSION}`)
      await rm(tree, { recursive: true, force: true })
    })

    const packages: AgentPackage[] = []
    const describe = async (file: string, format: PackageFormat): Promise<void> => {
      packages.push({ file: file.split('/').pop()!, format, arch, sizeBytes: (await stat(file)).size, sha256: await sha256Of(file) })
    }
    if (formats.includes('deb')) {
      await timed('deb', async () => {
        const file = await buildDeb({
          workDir: join(work, 'deb'),
          entries: agentTree({ executable: executable.executable, nativeAddon, notices, unitPath: DEB_UNIT_PATH }),
          outFile: join(staging, debFileName(AGENT_VERSION, revision, arch)),
          control: { version: AGENT_VERSION, revision, arch, installedSizeKiB: Math.ceil((executable.executableBytes + (await stat(nativeAddon)).size + notices.length) / 1024) },
          compression
        })
        await describe(file, 'deb')
      })
    }
    if (formats.includes('rpm')) {
      await timed('rpm', async () => {
        const file = await buildRpm({
          workDir: join(work, 'rpm'),
          entries: agentTree({ executable: executable.executable, nativeAddon, notices, unitPath: RPM_UNIT_PATH }),
          outDir: staging,
          version: AGENT_VERSION,
          release: revision,
          arch,
          license: `${project.license} AND MIT`,
          compression
        })
        if (file.split('/').pop() !== rpmFileName(AGENT_VERSION, revision, arch)) throw new PackageBuildError(`rpmbuild wrote ${file}`)
        await describe(file, 'rpm')
      })
    }

    await mkdir(join(staging, 'windows'))
    await mkdir(join(staging, 'macos'))
    await writeFile(join(staging, 'windows', 'meshdeploy-agent-service.xml'), renderWindowsService({ version: AGENT_VERSION }))
    await writeFile(join(staging, 'macos', 'org.meshdeploy.agent.plist'), renderLaunchdPlist())
    const manifest: AgentPackagesManifest = agentPackagesManifestSchema.parse({
      name: 'meshdeploy-agent',
      version: AGENT_VERSION,
      revision,
      builtAt: new Date().toISOString(),
      node: nodeVersion,
      packages,
      serviceDefinitions: [
        { platform: 'windows', file: 'windows/meshdeploy-agent-service.xml' },
        { platform: 'macos', file: 'macos/org.meshdeploy.agent.plist' }
      ]
    })
    await writeFile(join(staging, 'SHA256SUMS'), packages.map(entry => `${entry.sha256}  ${entry.file}`).join('\n') + '\n')
    await writeFile(join(staging, AGENT_PACKAGES_MANIFEST), JSON.stringify(manifest, null, 2) + '\n')
    await rm(outDir, { recursive: true, force: true })
    await rename(staging, outDir)
    return { outDir, manifest, timings, bundleBytes: executable.bytes, executableBytes: executable.executableBytes }
  } finally {
    await rm(work, { recursive: true, force: true })
    await rm(staging, { recursive: true, force: true })
  }
}
