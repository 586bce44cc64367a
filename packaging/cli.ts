import { Command, Option } from 'commander'
import { buildAgentPackages, type PackageFormat } from './build.js'

function positiveInteger (value: string): number {
  const number = Number(value)
  if (!Number.isInteger(number) || number < 1) throw new Error(`${value} is not a positive whole number`)
  return number
}

const program = new Command('package:agent')
  .description('build the agent packages (a self-contained executable, .deb and .rpm, service definitions) into dist-packages/')
  .option('--out <dir>', 'output folder (replaced once everything is built)')
  .addOption(new Option('--compression <level>', 'best: xz, what ships; fast: gzip -1, for tests').choices(['best', 'fast']).default('best'))
  .option('--revision <n>', 'Debian revision and RPM release of this build', positiveInteger, 1)
  .option('--formats <list>', 'package formats, comma separated', (value: string) => value.split(',').map(item => item.trim()), ['deb', 'rpm'])
  .option('--node <file>', 'the Node.js binary the executable is made from (default: the one running this build)')
  .option('--no-strip', 'keep the binary\'s symbols and debug information')
  .action(async options => {
    for (const format of options.formats) {
      if (format !== 'deb' && format !== 'rpm') throw new Error(`unknown format ${format as string}: deb or rpm`)
    }
    const started = Date.now()
    const result = await buildAgentPackages({
      ...(options.out !== undefined ? { outDir: options.out } : {}),
      compression: options.compression,
      revision: options.revision,
      formats: options.formats as PackageFormat[],
      ...(options.node !== undefined ? { nodeBinary: options.node } : {}),
      strip: options.strip !== false,
      log: line => { process.stdout.write(`  ${line}\n`) }
    })
    process.stdout.write(`agent ${result.manifest.version} (Node.js ${result.manifest.node}, bundle ${(result.bundleBytes / 1024 / 1024).toFixed(1)} MiB, executable ${(result.executableBytes / 1024 / 1024).toFixed(1)} MiB) in ${((Date.now() - started) / 1000).toFixed(1)} s:\n`)
    for (const entry of result.manifest.packages) process.stdout.write(`  ${result.outDir}/${entry.file}  ${(entry.sizeBytes / 1024 / 1024).toFixed(1)} MiB  sha256 ${entry.sha256}\n`)
    for (const entry of result.manifest.serviceDefinitions ?? []) process.stdout.write(`  ${result.outDir}/${entry.file}  (${entry.platform}: service definition; its installer is built on that platform)\n`)
  })

program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`package:agent: ${(error as Error).message}\n`)
  process.exitCode = 1
})
