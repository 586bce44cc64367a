import { quoteWindowsArgument } from '../agent/install/commands.js'
import { systemdQuote } from '../agent/service-unit.js'
import { AGENT_USER, CONFIG_PATH, DATA_DIR, EXECUTABLE_PATH, HOMEPAGE } from './layout.js'

/**
 * What the packaged agent may do beyond an ordinary user, and why: start
 * installers (dpkg, rpm, scripts) as root (setuid, setgid), stop them when
 * they overrun (kill), and write distributed files and archives anywhere
 * with their owners and modes (dac_override, chown, fowner).
 */
export const AGENT_CAPABILITIES = ['CAP_SETUID', 'CAP_SETGID', 'CAP_KILL', 'CAP_DAC_OVERRIDE', 'CAP_CHOWN', 'CAP_FOWNER'] as const

export interface PackagedUnitInit {
  /** @default EXECUTABLE_PATH */
  executable?: string
  /** @default CONFIG_PATH */
  config?: string
  /** @default AGENT_USER */
  user?: string
}

/**
 * The systemd unit of the agent packages: the agent runs as its own user with
 * the capabilities installs need, its state in /var/lib/meshdeploy-agent
 * (StateDirectory, owned by that user), its settings in the config file.
 */
export function renderPackagedUnit (init: PackagedUnitInit = {}): string {
  const user = init.user ?? AGENT_USER
  const command = [init.executable ?? EXECUTABLE_PATH, 'start', '--config', init.config ?? CONFIG_PATH, '--run-installers-as', 'root']
  return `[Unit]
Description=meshdeploy agent
Documentation=${HOMEPAGE}#agent-packages
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${command.map(systemdQuote).join(' ')}
User=${user}
Group=${user}
StateDirectory=${DATA_DIR.replace(/^\/var\/lib\//, '')}
StateDirectoryMode=0750
WorkingDirectory=${DATA_DIR}
UMask=0022
# The agent needs no privilege of its own; what it installs does. It starts installers as root,
# stops them when they overrun, and writes distributed files anywhere with their owners and modes.
AmbientCapabilities=${AGENT_CAPABILITIES.join(' ')}
# An installer may be upgrading this very agent: it must outlive the agent's restart.
KillMode=process
KillSignal=SIGTERM
TimeoutStopSec=120
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`
}

/** The settings file the packages create at first install; every key is an option of `agent start`. */
export function renderDefaultAgentConfig (): string {
  return `# meshdeploy agent settings (keys are the options of \`meshdeploy-agent start\` in camelCase).
# After a change: systemctl restart meshdeploy-agent
#
# The coordinator this device enrolls with, and the enrollment token for its first start.
# Once the device is enrolled the token is not used again; its identity lives in ${DATA_DIR}.
coordinator:
enrollToken:
# site: berlin
# groups: [kiosk, floor-2]
#
# How the coordinator's HTTPS certificate is trusted: a CA file, or the certificate's
# SHA-256 fingerprint; without either, the system's CAs.
# ca: /etc/meshdeploy/ca.pem
# pinSha256:
#
# Peer-to-peer sharing with the site's other agents.
# listen: [/ip4/0.0.0.0/tcp/8651]
# mdns: true
# uploadKbps: 20480
# cacheMaxMb: 10240
# swarmKey: /etc/meshdeploy/swarm.key
data: ${DATA_DIR}
logLevel: info
`
}

function xmlEscape (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;')
}

export interface WindowsServiceInit {
  /** @default C:\Program Files\meshdeploy-agent\meshdeploy-agent.exe */
  executable?: string
  /** @default C:\ProgramData\meshdeploy\agent.yaml */
  config?: string
  /** @default C:\ProgramData\meshdeploy\logs */
  logDir?: string
  version: string
}

/**
 * The agent's Windows service, as a WinSW service definition: Node cannot
 * speak to the Service Control Manager itself, so an MSI would install WinSW
 * (MIT) beside the agent as its service host, with this file next to it. The
 * service runs as LocalSystem (installers need it), starts at boot, restarts
 * after failures and gets two minutes to stop.
 */
export function renderWindowsService (init: WindowsServiceInit): string {
  const executable = init.executable ?? 'C:\\Program Files\\meshdeploy-agent\\meshdeploy-agent.exe'
  const config = init.config ?? 'C:\\ProgramData\\meshdeploy\\agent.yaml'
  const logDir = init.logDir ?? 'C:\\ProgramData\\meshdeploy\\logs'
  const args = ['start', '--config', config].map(quoteWindowsArgument).join(' ')
  return `<?xml version="1.0" encoding="UTF-8"?>
<!-- meshdeploy agent ${xmlEscape(init.version)}: WinSW service definition (install with: meshdeploy-agent-service.exe install) -->
<service>
  <id>meshdeploy-agent</id>
  <name>meshdeploy agent</name>
  <description>Installs the software this device is assigned and shares it with the devices of its site.</description>
  <executable>${xmlEscape(executable)}</executable>
  <arguments>${xmlEscape(args)}</arguments>
  <startmode>Automatic</startmode>
  <delayedAutoStart>true</delayedAutoStart>
  <serviceaccount>
    <username>LocalSystem</username>
  </serviceaccount>
  <onfailure action="restart" delay="5 sec"/>
  <onfailure action="restart" delay="30 sec"/>
  <resetfailure>1 hour</resetfailure>
  <stoptimeout>120 sec</stoptimeout>
  <logpath>${xmlEscape(logDir)}</logpath>
  <log mode="roll-by-size">
    <sizeThreshold>10240</sizeThreshold>
    <keepFiles>5</keepFiles>
  </log>
</service>
`
}

export interface LaunchdPlistInit {
  /** @default /Library/meshdeploy-agent/bin/meshdeploy-agent */
  executable?: string
  /** @default /Library/Application Support/meshdeploy/agent.yaml */
  config?: string
  /** @default /Library/Logs/meshdeploy-agent.log */
  logFile?: string
  /** @default org.meshdeploy.agent */
  label?: string
}

/**
 * The agent's launchd daemon (/Library/LaunchDaemons/org.meshdeploy.agent.plist):
 * started at boot as root, started again when it fails (not after a clean
 * stop), two minutes to stop, output to a log file.
 */
export function renderLaunchdPlist (init: LaunchdPlistInit = {}): string {
  const label = init.label ?? 'org.meshdeploy.agent'
  const executable = init.executable ?? '/Library/meshdeploy-agent/bin/meshdeploy-agent'
  const config = init.config ?? '/Library/Application Support/meshdeploy/agent.yaml'
  const logFile = init.logFile ?? '/Library/Logs/meshdeploy-agent.log'
  const strings = (values: string[]): string => values.map(value => `    <string>${xmlEscape(value)}</string>`).join('\n')
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>${xmlEscape(label)}</string>
  <key>ProgramArguments</key>
  <array>
${strings([executable, 'start', '--config', config])}
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>5</integer>
  <key>ExitTimeOut</key>
  <integer>120</integer>
  <key>ProcessType</key>
  <string>Background</string>
  <key>SoftResourceLimits</key>
  <dict>
    <key>NumberOfFiles</key>
    <integer>65536</integer>
  </dict>
  <key>StandardOutPath</key>
  <string>${xmlEscape(logFile)}</string>
  <key>StandardErrorPath</key>
  <string>${xmlEscape(logFile)}</string>
</dict>
</plist>
`
}
