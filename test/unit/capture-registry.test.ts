import test from 'ava'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  applyRegistryPatch, decodeRegExport, diffRegistry, parseRegExport, registryPatch, registryUndoPatch, type RegistrySnapshot
} from '../../coordinator/capture/registry.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'registry')

async function fixture (name: string): Promise<RegistrySnapshot> {
  return parseRegExport(decodeRegExport(await readFile(join(FIXTURES, `${name}.reg`))))
}

/** A snapshot as sorted text, case folded as Windows compares. */
function dump (snapshot: RegistrySnapshot): string[] {
  const lines: string[] = []
  for (const [id, key] of [...snapshot.entries()].sort(([a], [b]) => a < b ? -1 : 1)) {
    lines.push(`[${id}]`)
    for (const [name, { value }] of [...key.values.entries()].sort(([a], [b]) => a < b ? -1 : 1)) lines.push(`  ${name}=${value.type}:${value.data}`)
  }
  return lines
}

test('reg export text (UTF-16LE, continuation lines, every value type) reads into keys and values', async t => {
  const before = await fixture('before')
  const tool = before.get('hkey_local_machine\\software\\tool')!
  t.is(tool.path, 'HKEY_LOCAL_MACHINE\\SOFTWARE\\Tool')
  t.deepEqual(tool.values.get('')?.value, { type: 'sz', data: 'Tool' })
  t.deepEqual(tool.values.get('installpath')?.value, { type: 'sz', data: 'C:\\Program Files\\Tool' })
  t.deepEqual(tool.values.get('flags')?.value, { type: 'dword', data: '00000001' })
  t.is(tool.values.get('blob')?.value.data.split(',').length, 26, 'a continued hex value is joined')
  t.is(before.get('hkey_local_machine\\software\\microsoft\\windows\\currentversion\\uninstall\\tool')?.values.get('publisher')?.value.data, 'Example "Quoted" Ltd')
  t.false(before.has('hkey_local_machine\\software\\microsoft\\cryptography\\rng'), 'a churning key is left out by default')
  const after = await fixture('after')
  t.deepEqual(after.get('hkey_local_machine\\software\\tool\\plugins')?.values.get('count')?.value, { type: 'hex(b)', data: '02,00,00,00,00,00,00,00' })
  t.is(after.get('hkey_local_machine\\software\\tool')?.values.get('langs')?.value.type, 'hex(7)')
  t.throws(() => parseRegExport('[HKEY_LOCAL_MACHINE\\SOFTWARE]\r\n'), { name: 'RegistryFormatError', message: /no "Windows Registry Editor Version 5.00" header/ })
  t.throws(() => parseRegExport('Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\X]\r\n"A"=dword:12\r\n'), { name: 'RegistryFormatError', message: /line 4: a dword needs 8 hex digits/ })
})

test('the registry diff lists added and removed keys and added, changed and removed values; case and line breaks are no change', async t => {
  const diff = diffRegistry(await fixture('before'), await fixture('after'))
  t.deepEqual(diff.addedKeys, ['HKEY_LOCAL_MACHINE\\SOFTWARE\\TOOL\\Plugins'])
  t.deepEqual(diff.removedKeys, ['HKEY_LOCAL_MACHINE\\SOFTWARE\\Tool\\Legacy'], 'a removed key takes its subkeys along')
  t.deepEqual(diff.values.map(change => `${change.before === undefined ? '+' : change.after === undefined ? '-' : '~'} ${change.key.split('\\').pop()!}\\${change.name}`), [
    '~ Tool\\DisplayName',
    '~ Tool\\DisplayVersion',
    '+ Tool\\QuietUninstallString',
    '~ TOOL\\Flags',
    '+ TOOL\\Langs',
    '+ TOOL\\Path',
    '~ TOOL\\Version',
    '- TOOL\\Obsolete',
    '+ Plugins\\Count'
  ])
})

test('the registry patch turns the machine before into the machine after, and the undo patch turns it back', async t => {
  const before = await fixture('before')
  const after = await fixture('after')
  const diff = diffRegistry(before, after)
  const patch = registryPatch(diff)
  t.regex(patch, /^Windows Registry Editor Version 5\.00\r\n/)
  t.regex(patch, /\[-HKEY_LOCAL_MACHINE\\SOFTWARE\\Tool\\Legacy\]/)
  t.regex(patch, /"Obsolete"=-/)
  t.deepEqual(dump(applyRegistryPatch(before, patch)), dump(after))
  t.deepEqual(dump(applyRegistryPatch(after, registryUndoPatch(diff, before))), dump(before))
  t.deepEqual(diffRegistry(after, after), { addedKeys: [], removedKeys: [], values: [] })
})
