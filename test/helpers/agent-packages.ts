import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { readAgentPackages, type AgentPackagesManifest } from '../../coordinator/push/agent-packages.js'

const run = promisify(execFile)
const CHECKOUT = resolve(import.meta.dirname, '../..')
/** Built packages are kept here between test files (and runs), by the hash of what went into them. */
const CACHE = join(CHECKOUT, 'test-artifacts', 'agent-packages')
const BUILD_TIMEOUT_MS = 10 * 60_000

export const inCi = process.env.CI === 'true'

/** Whether a program is on PATH. */
export async function hasProgram (name: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${name}`])
    return true
  } catch {
    return false
  }
}

/** Tools the agent packages' build needs: a missing one skips the tests that need it (and fails them in CI). */
export async function missingBuildTools (): Promise<string[]> {
  const missing: string[] = []
  for (const tool of ['dpkg-deb', 'rpmbuild']) if (!await hasProgram(tool)) missing.push(tool)
  return missing
}

async function filesUnder (folder: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name)
    if (entry.isDirectory()) out.push(...await filesUnder(path))
    else if (entry.name.endsWith('.ts')) out.push(path)
  }
  return out
}

/** What the packages are made of: the agent's and the packaging's sources, the dependencies, the Node binary. */
async function inputsKey (): Promise<string> {
  const hash = createHash('sha256')
  for (const folder of ['agent', 'protocol', 'packaging']) {
    for (const file of (await filesUnder(join(CHECKOUT, folder))).sort()) hash.update(file).update(await readFile(file))
  }
  hash.update(await readFile(join(CHECKOUT, 'package-lock.json')))
  const node = await stat(process.execPath)
  hash.update(`${process.execPath}:${node.size}:${node.mtimeMs}:${process.version}`)
  return hash.digest('hex').slice(0, 16)
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export interface BuiltPackages {
  dir: string
  manifest: AgentPackagesManifest
  deb: string
  rpm: string
}

let building: Promise<BuiltPackages> | undefined

/**
 * The agent packages of this checkout, built once (fast compression) and
 * shared by every test file of the run: the first file to ask builds them
 * under a lock file, the others wait for it.
 */
export async function builtAgentPackages (): Promise<BuiltPackages> {
  building ??= (async () => {
    const key = await inputsKey()
    const dir = join(CACHE, key)
    const lock = `${dir}.lock`
    await mkdir(CACHE, { recursive: true })
    const deadline = Date.now() + BUILD_TIMEOUT_MS
    for (;;) {
      const manifest = await readAgentPackages(dir).catch(() => undefined)
      if (manifest !== undefined) {
        const file = (format: string): string => join(dir, manifest.packages.find(entry => entry.format === format)?.file ?? `missing-${format}`)
        return { dir, manifest, deb: file('deb'), rpm: file('rpm') }
      }
      let handle
      try {
        handle = await open(lock, 'wx')
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
        const holder = Number(await readFile(lock, 'utf8').catch(() => '0'))
        if (holder > 0 && !alive(holder)) await rm(lock, { force: true })
        if (Date.now() > deadline) throw new Error(`timed out waiting for another test file to build the agent packages (${lock})`)
        await new Promise(resolve => setTimeout(resolve, 500))
        continue
      }
      try {
        await handle.writeFile(String(process.pid))
        await handle.close()
        if (!existsSync(join(dir, 'manifest.json'))) {
          // Older builds of other inputs are of no further use.
          for (const name of await readdir(CACHE)) if (name !== key && !name.endsWith('.lock')) await rm(join(CACHE, name), { recursive: true, force: true })
          const { buildAgentPackages } = await import('../../packaging/build.js')
          await buildAgentPackages({ outDir: dir, compression: 'fast' })
        }
      } finally {
        await rm(lock, { force: true })
      }
    }
  })()
  return await building
}
