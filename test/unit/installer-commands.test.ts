import test from 'ava'
import {
  installCommand, linuxPackageQueryCommand, linuxPackageUninstallCommand, msiUninstallCommand, pkgFilesCommand, pkgForgetCommand,
  pkgInfoCommand, plistAsXmlCommand, quoteWindowsArgument, rebootCommand, registryQueryCommand
} from '../../agent/install/commands.js'
import { planReboot, rebootLine } from '../../agent/install/reboot.js'

const base = { runArgs: [] as string[], packageRoot: '/' }

test('Windows installers: msiexec /i … /qn /norestart with the task arguments, the exe itself, cmd for batch files, PowerShell for scripts', t => {
  t.deepEqual(installCommand({ ...base, kind: 'msi', file: 'C:\\work\\t\\7z.msi', runArgs: ['INSTALLDIR=C:\\Tools\\7-Zip', 'ALLUSERS=1'], logFile: 'C:\\work\\t\\msiexec.log' }), {
    command: 'msiexec.exe',
    args: ['/i', 'C:\\work\\t\\7z.msi', '/qn', '/norestart', '/l*v', 'C:\\work\\t\\msiexec.log', 'INSTALLDIR=C:\\Tools\\7-Zip', 'ALLUSERS=1']
  })
  t.deepEqual(installCommand({ ...base, kind: 'exe', file: 'C:\\work\\t\\setup.exe', runArgs: ['/S', '/D=C:\\Program Files\\Tool'] }), { command: 'C:\\work\\t\\setup.exe', args: ['/S', '/D=C:\\Program Files\\Tool'] })
  t.deepEqual(installCommand({ ...base, kind: 'bat', file: 'C:\\work\\t\\install tool.bat', runArgs: ['/quiet', 'a"b'] }), {
    command: 'cmd.exe', args: ['/d', '/s', '/c', '""C:\\work\\t\\install tool.bat" /quiet "a\\"b""'], verbatim: true
  })
  t.deepEqual(installCommand({ ...base, kind: 'ps1', file: 'C:\\work\\t\\setup.ps1', runArgs: ['-Silent'] }), {
    command: 'powershell.exe', args: ['-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', 'C:\\work\\t\\setup.ps1', '-Silent']
  })
})

test('macOS and Linux installers: installer -pkg … -target /, dpkg and rpm (under a private root when given), sh', t => {
  t.deepEqual(installCommand({ ...base, kind: 'pkg', file: '/var/md/work/t/Tool.pkg' }), { command: '/usr/sbin/installer', args: ['-pkg', '/var/md/work/t/Tool.pkg', '-target', '/'] })
  t.deepEqual(installCommand({ ...base, kind: 'deb', file: '/w/tool.deb', runArgs: ['--force-confold'] }), { command: 'dpkg', args: ['--force-confold', '--install', '/w/tool.deb'] })
  t.deepEqual(installCommand({ ...base, kind: 'deb', file: '/w/tool.deb', packageRoot: '/srv/root' }), { command: 'dpkg', args: ['--root=/srv/root', '--install', '/w/tool.deb'] })
  t.deepEqual(installCommand({ ...base, kind: 'rpm', file: '/w/tool.rpm', packageRoot: '/srv/root' }), { command: 'rpm', args: ['--upgrade', '--root', '/srv/root', '/w/tool.rpm'] })
  t.deepEqual(installCommand({ ...base, kind: 'shell', file: '/w/tool.sh', runArgs: ['--quiet'] }), { command: '/bin/sh', args: ['/w/tool.sh', '--quiet'] })
  t.throws(() => installCommand({ ...base, kind: 'zip', file: '/w/a.zip' }), { instanceOf: TypeError })
})

test('uninstall and detection commands for each platform', t => {
  t.deepEqual(msiUninstallCommand('{23170F69-40C1-2702-2301-000001000000}', []), { command: 'msiexec.exe', args: ['/x', '{23170F69-40C1-2702-2301-000001000000}', '/qn', '/norestart'] })
  t.deepEqual(linuxPackageUninstallCommand('dpkg', 'tool', '/'), { command: 'dpkg', args: ['--remove', 'tool'] })
  t.deepEqual(linuxPackageUninstallCommand('dpkg', 'tool', '/r', true), { command: 'dpkg', args: ['--root=/r', '--purge', 'tool'] })
  t.deepEqual(linuxPackageUninstallCommand('rpm', 'tool', '/'), { command: 'rpm', args: ['--erase', 'tool'] })
  t.deepEqual(linuxPackageQueryCommand('dpkg', 'tool', '/r/'), { command: 'dpkg-query', args: ['--admindir=/r/var/lib/dpkg', '--show', '--showformat=${Status}\\t${Version}\\n', 'tool'] })
  t.deepEqual(linuxPackageQueryCommand('rpm', 'tool', '/'), { command: 'rpm', args: ['--query', '--queryformat', '%{VERSION}-%{RELEASE}\\n', 'tool'] })
  t.deepEqual(registryQueryCommand('HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall'), { command: 'reg.exe', args: ['query', 'HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall', '/s'] })
  t.deepEqual(pkgInfoCommand('com.example.tool'), { command: '/usr/sbin/pkgutil', args: ['--pkg-info', 'com.example.tool'] })
  t.deepEqual(pkgFilesCommand('com.example.tool', 'files'), { command: '/usr/sbin/pkgutil', args: ['--only-files', '--files', 'com.example.tool'] })
  t.deepEqual(pkgForgetCommand('com.example.tool'), { command: '/usr/sbin/pkgutil', args: ['--forget', 'com.example.tool'] })
  t.deepEqual(plistAsXmlCommand('/Applications/Tool.app/Contents/Info.plist'), { command: '/usr/bin/plutil', args: ['-convert', 'xml1', '-o', '-', '/Applications/Tool.app/Contents/Info.plist'] })
})

test('Windows arguments are quoted the way the C runtime splits them', t => {
  t.is(quoteWindowsArgument('plain'), 'plain')
  t.is(quoteWindowsArgument(''), '""')
  t.is(quoteWindowsArgument('C:\\Program Files\\x'), '"C:\\Program Files\\x"')
  t.is(quoteWindowsArgument('a"b'), '"a\\"b"')
  t.is(quoteWindowsArgument('C:\\dir with space\\'), '"C:\\dir with space\\\\"')
})

test('reboot commands: shutdown with a message and a deadline on each platform, force-close on Windows', t => {
  t.deepEqual(rebootCommand({ platform: 'windows', delaySeconds: 600, message: 'Restarting to finish', forceCloseApps: true }), {
    command: 'shutdown.exe', args: ['/r', '/t', '600', '/c', 'Restarting to finish', '/d', 'p:4:2', '/f']
  })
  t.deepEqual(rebootCommand({ platform: 'linux', delaySeconds: 0, message: 'bye', forceCloseApps: false }), { command: 'shutdown', args: ['-r', 'now', 'bye'] })
  t.deepEqual(rebootCommand({ platform: 'linux', delaySeconds: 90, message: 'bye', forceCloseApps: false }), { command: 'shutdown', args: ['-r', '+2', 'bye'] })
  t.deepEqual(rebootCommand({ platform: 'macos', delaySeconds: 60, message: 'bye', forceCloseApps: false }), { command: '/sbin/shutdown', args: ['-r', '+1', 'bye'] })
})

test('the reboot policy against the installer outcome', t => {
  t.is(planReboot('success', { policy: 'never' }).action, 'none')
  t.is(planReboot('success-reboot-required', { policy: 'never' }).action, 'pending')
  t.is(planReboot('success-reboot-started', { policy: 'always' }).action, 'pending', 'the installer already reboots')
  t.like(planReboot('success', { policy: 'always', message: 'm' }), { action: 'reboot', delaySeconds: 0, message: 'm' })
  t.like(planReboot('success', { policy: 'prompt', deadlineSeconds: 3600, forceCloseApps: true }), { action: 'reboot', delaySeconds: 3600, forceCloseApps: true })
  t.like(planReboot('success-reboot-required', { policy: 'prompt' }), { action: 'reboot', delaySeconds: 900 })
  const { line, env } = rebootLine(planReboot('success', { policy: 'prompt', deadlineSeconds: 120, message: 'save your work' }), { platform: 'linux', command: ['/usr/local/bin/reboot-hook', '--now'] })
  t.deepEqual(line, { command: '/usr/local/bin/reboot-hook', args: ['--now'] })
  t.is(env.MESHDEPLOY_REBOOT_DELAY_SECONDS, '120')
  t.is(env.MESHDEPLOY_REBOOT_MESSAGE, 'save your work')
  t.is(env.MESHDEPLOY_REBOOT_FORCE_CLOSE_APPS, '0')
})
