import test from 'ava'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { findProducts, msiProductCodeOf, parseRegQuery, quietUninstallCommand } from '../../agent/install/windows.js'
import { parsePkgFiles, parsePkgInfo, parsePlistStrings } from '../../agent/install/macos.js'
import { parsePackageQuery } from '../../agent/install/linux-packages.js'

const fixture = async (name: string): Promise<string> => await readFile(join(import.meta.dirname, '..', 'fixtures', name), 'utf8')

test('reg query output of the Uninstall keys parses into products with their values', async t => {
  const entries = parseRegQuery(await fixture('reg-query-uninstall.txt'))
  t.is(entries.length, 4)
  t.is(entries[1].key, 'HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\AddressBook')
  t.deepEqual(entries[1].values, {})
  const [sevenZip] = findProducts(entries, '7-zip 23.01 (X64)', 'igor pavlov')
  t.is(sevenZip.values.DisplayVersion, '23.01')
  t.is(sevenZip.values.QuietUninstallString, '"C:\\Program Files\\7-Zip\\Uninstall.exe" /S')
  t.is(sevenZip.values.InstallLocation, 'C:\\Program Files\\7-Zip\\')
  t.is(findProducts(entries, '7-Zip 23.01 (x64)', 'Someone Else').length, 0)
  const [runtime] = findProducts(entries, 'Microsoft Visual C++ 2022 X64 Minimum Runtime - 14.38.33130')
  t.is(runtime.values.Comments, '')
  t.is(runtime.values.Publisher, 'Microsoft Corporation')
})

test('a product is removed by its QuietUninstallString, or as an MSI product; others are refused', async t => {
  const entries = parseRegQuery(await fixture('reg-query-uninstall.txt'))
  t.deepEqual(quietUninstallCommand(findProducts(entries, '7-Zip 23.01 (x64)')[0]), { command: 'cmd.exe', args: ['/d', '/s', '/c', '""C:\\Program Files\\7-Zip\\Uninstall.exe" /S"'], verbatim: true })
  const runtime = findProducts(entries, 'Microsoft Visual C++ 2022 X64 Minimum Runtime - 14.38.33130')[0]
  t.is(msiProductCodeOf(runtime.values.UninstallString), '{5FCE6D76-F5DC-37AB-B2B8-22AB8CEDB1D4}')
  t.deepEqual(quietUninstallCommand(runtime), { command: 'msiexec.exe', args: ['/x', '{5FCE6D76-F5DC-37AB-B2B8-22AB8CEDB1D4}', '/qn', '/norestart'] })
  const firefox = findProducts(entries, 'Mozilla Firefox (x64 en-US)')[0]
  t.throws(() => quietUninstallCommand(firefox), { message: /no QuietUninstallString/ })
})

test('pkgutil --pkg-info and --files output parse into a receipt and its paths', async t => {
  t.deepEqual(parsePkgInfo(await fixture('pkgutil-pkg-info.txt')), {
    packageId: 'com.microsoft.package.Microsoft_Word.app', version: '16.80.23121017', volume: '/', location: 'Applications', installTime: 1702553417
  })
  t.is(parsePkgInfo("No receipt for 'com.example.none' found at '/'."), undefined)
  const files = parsePkgFiles(await fixture('pkgutil-files.txt') + '../../etc/passwd\n/abs\n')
  t.is(files.length, 8)
  t.true(files.includes('Microsoft Word.app/Contents/MacOS/Microsoft Word'))
  t.false(files.some(file => file.includes('..') || file.startsWith('/')))
})

test('an XML Info.plist yields its top-level strings, nested dictionaries skipped', async t => {
  const values = parsePlistStrings(await fixture('Info.plist'))
  t.is(values.CFBundleIdentifier, 'com.microsoft.Word')
  t.is(values.CFBundleShortVersionString, '16.80')
  t.false('CFBundleTypeName' in values)
  t.false('LSRequiresNativeExecution' in values)
  t.is(values.NSHumanReadableCopyright, '© 2023 Microsoft Corporation. All rights reserved. <Word> & more')
})

test('dpkg-query and rpm answers say whether a package is installed and at which version', t => {
  t.deepEqual(parsePackageQuery('dpkg', 0, 'install ok installed\t1.2-1\n'), { installed: true, version: '1.2-1' })
  t.deepEqual(parsePackageQuery('dpkg', 0, 'deinstall ok config-files\t1.2-1\n'), { installed: false })
  t.deepEqual(parsePackageQuery('dpkg', 1, 'dpkg-query: no packages found matching tool\n'), { installed: false })
  t.deepEqual(parsePackageQuery('rpm', 0, '2.4.1-3.el9\n'), { installed: true, version: '2.4.1-3.el9' })
  t.deepEqual(parsePackageQuery('rpm', 1, 'package tool is not installed\n'), { installed: false })
})
