import test from 'ava'
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parseAgentConfig } from '../../agent/config-file.js'
import { agentTree } from '../../packaging/build.js'
import { debFileName, renderDebControl } from '../../packaging/deb.js'
import { debianMaintainerScripts, rpmScriptlets } from '../../packaging/maintainer-scripts.js'
import { renderRpmSpec, rpmFileName } from '../../packaging/rpm.js'
import { AGENT_CAPABILITIES, renderDefaultAgentConfig, renderLaunchdPlist, renderPackagedUnit, renderWindowsService } from '../../packaging/service-definitions.js'
import { parentFolders } from '../../packaging/tree.js'
import { tempFolder } from '../helpers/temp.js'

const run = promisify(execFile)

test('the packaged unit runs the agent as its own user, with the capabilities installs need and its config file', t => {
  const unit = renderPackagedUnit()
  t.regex(unit, /^ExecStart=\/opt\/meshdeploy-agent\/bin\/meshdeploy-agent start --config \/etc\/meshdeploy\/agent\.yaml --run-installers-as root$/m)
  t.regex(unit, /^User=meshdeploy-agent$/m)
  t.regex(unit, /^Group=meshdeploy-agent$/m)
  t.regex(unit, /^StateDirectory=meshdeploy-agent$/m)
  t.regex(unit, /^AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER$/m)
  t.regex(unit, /^KillMode=process$/m, 'an installer upgrading the agent outlives its restart')
  t.regex(unit, /^WantedBy=multi-user\.target$/m)
  t.false((AGENT_CAPABILITIES as readonly string[]).includes('CAP_SYS_ADMIN'), 'nothing broader than installs need')
  t.regex(renderPackagedUnit({ executable: '/opt/mesh deploy/agent', user: 'agent' }), /^ExecStart="\/opt\/mesh deploy\/agent" start/m, 'paths with spaces are quoted for systemd')
})

test('the config template is a valid agent config that names no coordinator yet', t => {
  const config = parseAgentConfig(renderDefaultAgentConfig())
  t.deepEqual(config, { data: '/var/lib/meshdeploy-agent', logLevel: 'info' })
})

test('the launchd plist: a boot daemon kept alive after failures, with its arguments escaped', t => {
  const plist = renderLaunchdPlist({ config: '/Library/Application Support/meshdeploy/a&b.yaml' })
  t.true(plist.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist'))
  t.regex(plist, /<key>Label<\/key>\s*<string>org\.meshdeploy\.agent<\/string>/)
  t.regex(plist, /<key>ProgramArguments<\/key>\s*<array>\s*<string>\/Library\/meshdeploy-agent\/bin\/meshdeploy-agent<\/string>\s*<string>start<\/string>\s*<string>--config<\/string>\s*<string>\/Library\/Application Support\/meshdeploy\/a&amp;b\.yaml<\/string>\s*<\/array>/)
  t.regex(plist, /<key>RunAtLoad<\/key>\s*<true\/>/)
  t.regex(plist, /<key>KeepAlive<\/key>\s*<dict>\s*<key>SuccessfulExit<\/key>\s*<false\/>/)
  t.is(plist.match(/<dict>/g)?.length, plist.match(/<\/dict>/g)?.length, 'balanced')
})

test('the Windows service definition: LocalSystem, automatic start, restarts, arguments quoted for Windows and escaped for XML', t => {
  const xml = renderWindowsService({ version: '0.1.0', config: 'C:\\ProgramData\\mesh deploy\\agent.yaml' })
  t.regex(xml, /<id>meshdeploy-agent<\/id>/)
  t.regex(xml, /<executable>C:\\Program Files\\meshdeploy-agent\\meshdeploy-agent\.exe<\/executable>/)
  t.regex(xml, /<arguments>start --config &quot;C:\\ProgramData\\mesh deploy\\agent\.yaml&quot;<\/arguments>/)
  t.regex(xml, /<username>LocalSystem<\/username>/)
  t.regex(xml, /<startmode>Automatic<\/startmode>/)
  t.regex(xml, /<onfailure action="restart" delay="5 sec"\/>/)
})

test('Debian control, file names, and an RPM spec that owns only its own folders', t => {
  const control = renderDebControl({ version: '0.1.0', revision: 3, arch: 'x64', installedSizeKiB: 88_000 })
  t.regex(control, /^Package: meshdeploy-agent\nVersion: 0\.1\.0-3\nArchitecture: amd64\n/)
  t.regex(control, /^Description: .+\n( .+\n)+$/m, 'a synopsis and an indented long description')
  t.is(debFileName('0.1.0', 3, 'arm64'), 'meshdeploy-agent_0.1.0-3_arm64.deb')
  t.is(rpmFileName('0.1.0', 3, 'x64'), 'meshdeploy-agent-0.1.0-3.x86_64.rpm')
  t.throws(() => debFileName('0.1.0', 1, 'ia32'), { instanceOf: RangeError })
  const entries = agentTree({ executable: '/build/exe', nativeAddon: '/build/addon.node', notices: 'n', unitPath: '/usr/lib/systemd/system/meshdeploy-agent.service' })
  const spec = renderRpmSpec({ version: '0.1.0', release: 3, arch: 'x64', entries, stageRoot: '/build/stage', license: 'Apache-2.0 AND MIT' })
  t.regex(spec, /^%attr\(0755,root,root\) \/opt\/meshdeploy-agent\/bin\/meshdeploy-agent$/m)
  t.regex(spec, /^%dir \/opt\/meshdeploy-agent$/m)
  t.notRegex(spec, /^%dir \/usr/m, 'system folders belong to the system')
  t.regex(spec, /^\/usr\/bin\/meshdeploy-agent$/m)
  t.regex(spec, /^%global __strip \/bin\/true$/m, 'the executable is not stripped again (the agent is injected in it)')
  t.deepEqual(parentFolders(entries), ['/opt', '/usr', '/usr/bin', '/usr/lib', '/usr/lib/systemd', '/usr/lib/systemd/system'])
})

test('every maintainer script and scriptlet is valid POSIX shell', async t => {
  const folder = await tempFolder(t, 'md-scripts-')
  const scripts = { ...debianMaintainerScripts(), ...Object.fromEntries(Object.entries(rpmScriptlets()).map(([name, text]) => [`rpm-${name}`, text])) }
  for (const [name, text] of Object.entries(scripts)) {
    const file = join(folder, name)
    await writeFile(file, text)
    await t.notThrowsAsync(run('sh', ['-n', file]), name)
    t.notRegex(text, /rm -rf "\$root"|rm -rf \/ /, `${name} removes only its own files`)
  }
  t.regex(debianMaintainerScripts().postrm, /case "\$1" in\n {2}purge\) forget_identity ;;/, 'only a purge forgets the identity')
  t.notRegex(rpmScriptlets().postun, /forget_identity\n/, 'rpm has no purge: removal keeps the identity')
})
