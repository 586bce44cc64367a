import test from 'ava'
import { AgentConfigError, optionValuesOf, parseAgentConfig, parseRunAs } from '../../agent/config-file.js'

const TEMPLATE = `# as the agent packages install it
coordinator: https://deploy.example.org:8650
enrollToken:
site: berlin
groups: [kiosk, floor-2]
data: /var/lib/meshdeploy-agent
mdns: false
listen:
  - /ip4/0.0.0.0/tcp/8651
metricsListen: 9464
rebootCommand: systemctl reboot --message "meshdeploy"
runInstallersAs: root
`

test('the packaged config: empty keys count as absent, values take the types the options hold', t => {
  const config = parseAgentConfig(TEMPLATE)
  t.false('enrollToken' in config)
  const values = optionValuesOf(config)
  t.is(values.coordinator, 'https://deploy.example.org:8650')
  t.deepEqual(values.groups, ['kiosk', 'floor-2'])
  t.is(values.mdns, false)
  t.deepEqual(values.metricsListen, { host: '127.0.0.1', port: 9464 })
  t.deepEqual(values.rebootCommand, ['systemctl', 'reboot', '--message', 'meshdeploy'])
  t.deepEqual(values.runInstallersAs, { uid: 0, gid: 0 })
})

test('a config with an unknown setting, a wrong type or broken YAML is refused with the reason', t => {
  const unknown = t.throws(() => parseAgentConfig('coordinater: https://x.example\n', '/etc/meshdeploy/agent.yaml'), { instanceOf: AgentConfigError })
  t.regex(unknown.message, /agent\.yaml.*coordinater/s)
  t.throws(() => parseAgentConfig('mdns: sometimes\n'), { instanceOf: AgentConfigError, message: /mdns/ })
  t.throws(() => parseAgentConfig('coordinator: [\n'), { instanceOf: AgentConfigError, message: /not valid YAML/ })
  t.throws(() => parseAgentConfig('- a\n- b\n'), { instanceOf: AgentConfigError, message: /mapping/ })
  t.throws(() => optionValuesOf(parseAgentConfig('metricsListen: "nowhere:port"\n')), { instanceOf: AgentConfigError, message: /metricsListen/ })
})

test('installers run as root, a user id, or a user and group id', t => {
  t.deepEqual(parseRunAs('root'), { uid: 0, gid: 0 })
  t.deepEqual(parseRunAs('1001'), { uid: 1001, gid: 1001 })
  t.deepEqual(parseRunAs(' 1001:50 '), { uid: 1001, gid: 50 })
  t.deepEqual(parseRunAs(0), { uid: 0, gid: 0 })
  t.throws(() => parseRunAs('admin'), { instanceOf: AgentConfigError })
})
