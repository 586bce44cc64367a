import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, copyFile, readdir, stat, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { promisify } from 'node:util'
import * as esbuild from 'esbuild'

const run = promisify(execFile)
const require = createRequire(import.meta.url)

/** The sentinel Node's single executable applications are marked with (node/src/node_sea.cc). */
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'

/** The checkout this file belongs to, whether it runs from dist/packaging or from packaging/. */
function findCheckout (): string {
  let folder = import.meta.dirname
  while (!existsSync(join(folder, 'package.json')) || !existsSync(join(folder, 'agent'))) {
    const parent = dirname(folder)
    if (parent === folder) throw new Error(`no meshdeploy checkout above ${import.meta.dirname}`)
    folder = parent
  }
  return folder
}

/** Where the agent's source lives. */
export const CHECKOUT = findCheckout()

/** Folders of the checkout the agent may not carry. */
const FORBIDDEN_FOLDERS = ['coordinator/', 'bench/', 'test/']

/** A bundle that pulled in code the agent must not carry; the build stops. */
export class BundleContentError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'BundleContentError'
  }
}

export interface BundleResult {
  file: string
  bytes: number
  /** Folders of the npm packages inside the bundle (for their licences). */
  packageFolders: string[]
  /** Source files of the checkout inside the bundle, relative to it. */
  sourceFiles: string[]
}

/**
 * classic-level loads its native addon through node-gyp-build, relative to
 * its own folder. Inside the executable the addon lives in ../lib beside it.
 */
const nativeAddonShim: esbuild.Plugin = {
  name: 'meshdeploy-native-addon',
  setup (build) {
    build.onResolve({ filter: /^node-gyp-build$/ }, () => ({ path: 'node-gyp-build', namespace: 'meshdeploy-native' }))
    build.onLoad({ filter: /.*/, namespace: 'meshdeploy-native' }, () => ({
      loader: 'js',
      contents: `const { createRequire } = require('node:module')
const { dirname, join } = require('node:path')
module.exports = function load () {
  return createRequire(process.execPath)(join(dirname(process.execPath), '..', 'lib', 'classic-level.node'))
}`
    }))
  }
}

/** Bundles the agent's entry point and everything it imports into one CommonJS file, as Node's single executable applications run. */
export async function bundleAgent (outFile: string, entry = join(CHECKOUT, 'packaging/agent-entry.ts')): Promise<BundleResult> {
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile: outFile,
    absWorkingDir: CHECKOUT,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'none',
    metafile: true,
    logLevel: 'silent',
    // CommonJS has no import.meta; the few uses want the file's URL.
    define: { 'import.meta.url': 'meshdeployImportMetaUrl', 'import.meta.dirname': '__dirname' },
    banner: { js: 'var meshdeployImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
    plugins: [nativeAddonShim]
  })
  const inputs = Object.keys(result.metafile.inputs)
  const sourceFiles = inputs.filter(input => !input.includes('node_modules/') && !input.includes(':'))
  const forbidden = sourceFiles.filter(file => FORBIDDEN_FOLDERS.some(folder => file.startsWith(folder)))
  if (forbidden.length > 0) throw new BundleContentError(`the agent's bundle would carry ${forbidden.slice(0, 5).join(', ')}: the agent's entry point must not import them`)
  const packageFolders = new Set<string>()
  for (const input of inputs) {
    const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(resolve(CHECKOUT, input))
    if (match !== null) packageFolders.add(match[1])
  }
  const bytes = (await stat(outFile)).size
  return { file: outFile, bytes, packageFolders: [...packageFolders].sort(), sourceFiles }
}

export interface ExecutableInit {
  /** A folder for the intermediate files. */
  workDir: string
  outFile: string
  /** The Node.js binary the executable is made from. @default process.execPath */
  nodeBinary?: string
  /** Strip the binary's symbols and debug information (about 13 MB less). @default true */
  strip?: boolean
}

export interface ExecutableResult extends BundleResult {
  executable: string
  executableBytes: number
  stripped: boolean
}

/**
 * Makes the agent a Node.js single executable application: the bundle and a
 * V8 code cache of it injected into a copy of the Node binary (postject), so
 * that the device needs neither Node nor npm.
 */
export async function buildAgentExecutable (init: ExecutableInit): Promise<ExecutableResult> {
  const nodeBinary = init.nodeBinary ?? process.execPath
  const bundle = await bundleAgent(join(init.workDir, 'agent.cjs'))
  const blob = join(init.workDir, 'agent.blob')
  const seaConfig = join(init.workDir, 'sea-config.json')
  await writeFile(seaConfig, JSON.stringify({ main: bundle.file, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true }))
  await run(nodeBinary, ['--experimental-sea-config', seaConfig], { cwd: init.workDir })
  await copyFile(nodeBinary, init.outFile)
  await chmod(init.outFile, 0o755)
  let stripped = false
  if (init.strip ?? true) {
    try {
      await run('strip', [init.outFile])
      stripped = true
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    }
  }
  // postject's ELF library prints warnings of its own: it runs as a child whose output is kept for a failure's message.
  await run(process.execPath, [require.resolve('postject/dist/cli.js'), init.outFile, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], { maxBuffer: 16 * 1024 * 1024 })
  await chmod(init.outFile, 0o755)
  const executableBytes = (await stat(init.outFile)).size
  return { ...bundle, executable: init.outFile, executableBytes, stripped }
}

/** The native addon of classic-level for this platform, built for glibc, from the checkout's node_modules. */
export async function nativeAddonSource (platform = process.platform, arch = process.arch): Promise<string> {
  const folder = join(CHECKOUT, 'node_modules/classic-level/prebuilds', `${platform}-${arch}`)
  const candidates = (await readdir(folder).catch(() => [])).filter(name => name.endsWith('.node') && !name.includes('musl'))
  if (candidates.length === 0) throw new Error(`classic-level has no prebuilt addon for ${platform}-${arch} in ${folder}`)
  return join(folder, candidates[0])
}
