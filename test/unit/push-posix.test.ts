import test from 'ava'
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parseAgentConfig } from '../../agent/config-file.js'
import { renderPushProgress, renderPushResults } from '../../coordinator/cli/push-view.js'
import { archOfMachine } from '../../coordinator/push/agent-packages.js'
import { normalizeHostKeyFingerprint } from '../../coordinator/push/host-keys.js'
import { HostEntryError, parseHostEntry } from '../../coordinator/push/hosts.js'
import {
  agentInstallScript, agentPackageFormatFor, asRoot, detectionCommand, packageInstallCommand, parseDetection, parseOsRelease, parseProbe,
  PROBE_COMMAND, rebootCommand, renderPushedAgentConfig, shellQuote, type HostFacts
} from '../../coordinator/push/posix.js'
import { isFinalReason } from '../../coordinator/push/runner.js'
import { tempFolder } from '../helpers/temp.js'

const run = promisify(execFile)

test('host entries: names, addresses, ports and IPv6 in brackets; anything else is refused with the reason', t => {
  const table: Array<[string, { address: string, port: number }]> = [
    ['10.1.0.21', { address: '10.1.0.21', port: 22 }],
    ['10.1.0.21:2222', { address: '10.1.0.21', port: 2222 }],
    ['Build-7.Example.org', { address: 'build-7.example.org', port: 22 }],
    ['build-7:2200', { address: 'build-7', port: 2200 }],
    ['fe80::1', { address: 'fe80::1', port: 22 }],
    ['[2001:db8::5]:2022', { address: '2001:db8::5', port: 2022 }],
    ['[2001:db8::5]', { address: '2001:db8::5', port: 22 }]
  ]
  for (const [entry, expected] of table) t.like(parseHostEntry(entry), { host: entry, ...expected }, entry)
  t.is(parseHostEntry('db1', 2200).port, 2200, 'the push\'s port for hosts that name none')
  for (const entry of ['', 'host:0', 'host:65536', 'host:ssh', 'bad_name', '[10.0.0.1]:22', 'a b', '-lead.example']) {
    t.throws(() => parseHostEntry(entry), { instanceOf: HostEntryError }, entry)
  }
})

test('host key fingerprints as operators paste them', t => {
  const body = 'nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8'
  t.is(normalizeHostKeyFingerprint(`SHA256:${body}`), `SHA256:${body}`)
  t.is(normalizeHostKeyFingerprint(` ${body}= `), `SHA256:${body}`)
  t.is(normalizeHostKeyFingerprint('MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48'), undefined)
  t.is(normalizeHostKeyFingerprint('SHA256:short'), undefined)
})

function facts (os: Record<string, string>, tools: string[], machine = 'x86_64'): HostFacts {
  return { kernel: 'Linux', machine, uid: 1000, tools: new Set(tools), os }
}

test('the agent package for a host: its distribution family first, then whichever package manager it has', t => {
  t.is(agentPackageFormatFor(facts({ ID: 'debian' }, ['dpkg'])), 'deb')
  t.is(agentPackageFormatFor(facts({ ID: 'linuxmint', ID_LIKE: 'ubuntu debian' }, ['dpkg', 'rpm'])), 'deb', 'Mint has rpm installed as a tool, but is Debian')
  t.is(agentPackageFormatFor(facts({ ID: 'rocky', ID_LIKE: 'rhel centos fedora' }, ['rpm'])), 'rpm')
  t.is(agentPackageFormatFor(facts({ ID: 'opensuse-leap', ID_LIKE: 'suse opensuse' }, ['rpm'])), 'rpm')
  t.is(agentPackageFormatFor(facts({ ID: 'arch' }, [])), undefined)
  t.is(agentPackageFormatFor(facts({}, ['rpm'])), 'rpm')
  t.is(archOfMachine('x86_64'), 'x64')
  t.is(archOfMachine('aarch64'), 'arm64')
  t.is(archOfMachine('riscv64'), undefined)
})

test('the probe runs in a POSIX shell and says what the host is', async t => {
  const { stdout } = await run('sh', ['-c', PROBE_COMMAND])
  const probed = parseProbe(stdout)
  t.is(probed.kernel, 'Linux')
  t.is(probed.uid, process.getuid!())
  t.true(probed.tools.has('mktemp'))
  t.truthy(probed.os.ID)
  t.deepEqual(parseOsRelease('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian \\"bookworm\\""\n# comment\n'), { NAME: 'Debian GNU/Linux', ID: 'debian', VERSION_ID: '12', PRETTY_NAME: 'Debian "bookworm"' })
})

test('quoting and root: every word reaches the command as it was, the password only through standard input', async t => {
  const words = ['plain', 'with space', "it's", '$HOME', '`id`', 'a\nb', '', '*']
  const { stdout } = await run('sh', ['-c', `printf '%s|' ${words.map(shellQuote).join(' ')}`])
  t.is(stdout, words.map(word => `${word}|`).join(''))
  t.is(asRoot('id -u', 'root'), 'sh -c \'id -u\'')
  t.is(asRoot('id -u', 'sudo'), 'sudo -n -- sh -c \'id -u\'')
  t.is(asRoot('id -u', 'sudo-password'), 'sudo -S -p \'\' -- sh -c \'exec </dev/null; id -u\'')
  t.is(packageInstallCommand('deb', '/tmp/w/a b.deb', ['--force-confold']), 'env DEBIAN_FRONTEND=noninteractive dpkg --force-confold --install \'/tmp/w/a b.deb\'')
  t.is(packageInstallCommand('shell', '/tmp/w/setup.sh', ['--quiet', 'x y']), '/bin/sh /tmp/w/setup.sh --quiet \'x y\'')
  t.throws(() => packageInstallCommand('msi', '/tmp/w/a.msi', []), { instanceOf: TypeError })
  t.is(rebootCommand(90, 'bye'), 'shutdown -r +2 bye')
  t.is(rebootCommand(0, 'now it is'), 'shutdown -r now \'now it is\'')
})

test('a pushed agent\'s config is one the agent accepts, under a prefix too', t => {
  const system = parseAgentConfig(renderPushedAgentConfig({ coordinatorUrl: 'https://deploy.example.org:8650', enrollToken: 'mde_secret', site: 'berlin', groups: ['kiosk'], pinSha256: 'ab'.repeat(32) }))
  t.deepEqual(system, { coordinator: 'https://deploy.example.org:8650', enrollToken: 'mde_secret', site: 'berlin', groups: ['kiosk'], pinSha256: 'ab'.repeat(32), data: '/var/lib/meshdeploy-agent', logLevel: 'info' })
  const prefixed = parseAgentConfig(renderPushedAgentConfig({ coordinatorUrl: 'http://10.0.0.1:8650', enrollToken: 'mde_x: "y"', prefix: '/srv/lab/host 1' }))
  t.like(prefixed, { enrollToken: 'mde_x: "y"', insecureHttp: true, data: '/srv/lab/host 1/var/lib/meshdeploy-agent', installRoot: '/srv/lab/host 1' })
})

test('the agent\'s install scripts are valid shell, and a prefix never touches the system', async t => {
  const folder = await tempFolder(t, 'md-push-scripts-')
  for (const [name, script] of Object.entries({
    deb: agentInstallScript({ format: 'deb', packageFile: '/tmp/w/agent.deb', configFile: '/tmp/w/agent.yaml', timeoutSeconds: 600 }),
    rpm: agentInstallScript({ format: 'rpm', packageFile: '/tmp/w/agent.rpm', configFile: '/tmp/w/agent.yaml' }),
    prefixDeb: agentInstallScript({ format: 'deb', packageFile: '/tmp/w/agent.deb', configFile: '/tmp/w/agent.yaml', prefix: '/srv/lab' }),
    prefixRpm: agentInstallScript({ format: 'rpm', packageFile: '/tmp/w/agent.rpm', configFile: '/tmp/w/agent.yaml', prefix: '/srv/lab' })
  })) {
    const file = join(folder, name)
    await writeFile(file, script)
    await t.notThrowsAsync(run('sh', ['-n', file]), name)
    if (name.startsWith('prefix')) {
      t.notRegex(script, /dpkg --install|rpm --upgrade|systemctl/, `${name} installs nothing into the system`)
      t.false(script.split('\n').some(line => /(^|\s)\/(etc|opt|var)\//.test(line)), `${name} writes only under the prefix`)
    }
  }
  t.regex(agentInstallScript({ format: 'deb', packageFile: '/w/a.deb', configFile: '/w/c', timeoutSeconds: 600 }), /timeout --kill-after=10 600 dpkg --force-confold --install/)
})

test('detection rules checked on a host: file, command and package queries', t => {
  const file = { type: 'file' as const, path: '/opt/tool/bin/tool', sha256: 'a'.repeat(64) }
  t.is(detectionCommand(file), 'if [ -f /opt/tool/bin/tool ]; then sha256sum /opt/tool/bin/tool; else echo missing; fi')
  t.like(parseDetection(file, 0, `${'a'.repeat(64)}  /opt/tool/bin/tool\n`), { installed: true })
  t.like(parseDetection(file, 0, `${'b'.repeat(64)}  /opt/tool/bin/tool\n`), { installed: false })
  t.like(parseDetection(file, 0, 'missing\n'), { installed: false })
  const dpkg = { type: 'linux-package' as const, manager: 'dpkg' as const, name: 'tool', version: '1.2-1' }
  t.like(parseDetection(dpkg, 0, 'installed\t1.2-1\n'), { installed: true })
  t.like(parseDetection(dpkg, 0, 'installed\t1.1-1\n'), { installed: false, detail: 'tool is at 1.1-1, not 1.2-1' })
  t.like(parseDetection(dpkg, 0, 'config-files\t1.2-1\n'), { installed: false })
  t.like(parseDetection(dpkg, 1, ''), { installed: false })
  const rpm = { type: 'linux-package' as const, manager: 'rpm' as const, name: 'tool' }
  t.like(parseDetection(rpm, 0, '1.2-1.el9\n'), { installed: true })
  t.like(parseDetection(rpm, 1, 'package tool is not installed\n'), { installed: false })
  t.like(parseDetection({ type: 'command', command: ['/usr/bin/tool', '--check'] }, 0, ''), { installed: true })
  const windows = { type: 'windows-registry' as const, displayName: 'Tool' }
  t.is(detectionCommand(windows), undefined)
  t.like(parseDetection(windows, null, ''), { installed: false, unknown: true })
})

test('failures no attempt can mend end a host at once; the others are tried again', t => {
  for (const reason of ['host-key-mismatch', 'authentication-refused', 'not-enough-rights', 'unsupported-platform', 'no-agent-package'] as const) t.true(isFinalReason(reason), reason)
  for (const reason of ['unreachable', 'connection-lost', 'installer-failed', 'installer-timeout', 'not-enrolled', 'upload-failed'] as const) t.false(isFinalReason(reason), reason)
})

test('the CLI\'s push view: a progress line, and per host every attempt with each credential\'s outcome', t => {
  t.is(renderPushProgress({ name: 'x', run: 2, status: 'running', counts: { pending: 1, running: 1, waiting: 0, succeeded: 1, failed: 1, cancelled: 0 } }),
    `${'█'.repeat(12)}${'░'.repeat(12)} 2/4 hosts  run 2 running: succeeded 1, failed 1, running 1, pending 1`)
  const text = renderPushResults([
    { host: 'h1', state: 'succeeded', credentialName: 'key', deviceId: 'dev-1', attempts: [{}], platform: 'Debian', message: 'installed' },
    {
      host: 'h2',
      state: 'failed',
      attempts: [{ number: 1, outcome: 'failed', reason: 'not-enough-rights', detail: 'no credential could install', credentials: [{ credentialName: 'key', outcome: 'authentication-refused' }, { credentialName: 'ops', outcome: 'not-enough-rights', detail: 'sudo refused' }] }],
      message: 'no credential could install'
    }
  ])
  t.regex(text, /^HOST\s+STATE\s+CREDENTIAL\s+DEVICE/)
  t.regex(text, /h1\s+succeeded\s+key\s+dev-1\s+1/)
  t.regex(text, /attempt 1: failed \(not-enough-rights\)/)
  t.regex(text, / {4}key: authentication-refused\n {4}ops: not-enough-rights — sudo refused/)
})
