/** Where the agent packages put things on a Linux device. */
export const PACKAGE_NAME = 'meshdeploy-agent'
/** The system user and group the agent runs as. */
export const AGENT_USER = 'meshdeploy-agent'
export const INSTALL_DIR = '/opt/meshdeploy-agent'
export const EXECUTABLE_PATH = `${INSTALL_DIR}/bin/meshdeploy-agent`
/** The native addon of the agent's database (classic-level), beside the executable that loads it. */
export const NATIVE_ADDON_PATH = `${INSTALL_DIR}/lib/classic-level.node`
/** The settings file the packages create at first install (from the template) and keep until purge. */
export const CONFIG_PATH = '/etc/meshdeploy/agent.yaml'
export const CONFIG_TEMPLATE_PATH = `${INSTALL_DIR}/share/agent.yaml`
export const NOTICES_PATH = `${INSTALL_DIR}/share/doc/THIRD-PARTY-NOTICES`
/** Identity, task state and chunk cache: kept on upgrade and removal, removed on purge. */
export const DATA_DIR = '/var/lib/meshdeploy-agent'
export const UNIT_NAME = 'meshdeploy-agent.service'
/** Debian ships units under /lib (bookworm's dpkg does not see /lib and /usr/lib as one); RPM distributions under /usr/lib. */
export const DEB_UNIT_PATH = `/lib/systemd/system/${UNIT_NAME}`
export const RPM_UNIT_PATH = `/usr/lib/systemd/system/${UNIT_NAME}`
/** On PATH, relative so that it also resolves in a tree unpacked under a prefix. */
export const COMMAND_LINK_PATH = '/usr/bin/meshdeploy-agent'
export const COMMAND_LINK_TARGET = '../../opt/meshdeploy-agent/bin/meshdeploy-agent'

/** Node's architecture names → Debian's and RPM's. */
export const DEB_ARCHITECTURES: Readonly<Record<string, string>> = { x64: 'amd64', arm64: 'arm64' }
export const RPM_ARCHITECTURES: Readonly<Record<string, string>> = { x64: 'x86_64', arm64: 'aarch64' }

export const HOMEPAGE = 'https://github.com/meshdeploy/meshdeploy'
export const MAINTAINER = 'meshdeploy developers <packages@meshdeploy.dev>'
export const SUMMARY = 'meshdeploy agent: peer-to-peer assisted software distribution'
export const DESCRIPTION = [
  'Enrolls this device with a meshdeploy coordinator, installs the software it',
  'is assigned, and shares package chunks with the other devices of its site',
  'over libp2p, so that each package crosses the site\'s WAN link once.',
  'Self-contained: it carries its own Node.js runtime.'
]
