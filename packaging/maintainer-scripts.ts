import { AGENT_USER, CONFIG_PATH, CONFIG_TEMPLATE_PATH, DATA_DIR, UNIT_NAME } from './layout.js'

/**
 * The shell functions every maintainer script shares. `$root` is dpkg's
 * DPKG_ROOT (empty on a real install): with it the scripts work on a tree
 * under that folder and leave the running system (users, systemd) alone,
 * which is how the package's tests install, upgrade, remove and purge it.
 */
function common (): string {
  return `root="\${DPKG_ROOT:-}"
user=${AGENT_USER}
config="$root${CONFIG_PATH}"
data="$root${DATA_DIR}"

systemd_running () {
  [ -z "$root" ] && [ -d /run/systemd/system ]
}

# The config names a coordinator: the agent can enroll and run.
configured () {
  grep -Eq '^coordinator:[[:space:]]*[^[:space:]#]' "$config" 2>/dev/null
}

ensure_user () {
  if [ -n "$root" ]; then
    grep -q "^$user:" "$root/etc/passwd" 2>/dev/null && return 0
    useradd --prefix "$root" --system --user-group --home-dir ${DATA_DIR} --no-create-home --shell /usr/sbin/nologin --comment 'meshdeploy agent' "$user"
  else
    getent passwd "$user" >/dev/null && return 0
    useradd --system --user-group --home-dir ${DATA_DIR} --no-create-home --shell /usr/sbin/nologin --comment 'meshdeploy agent' "$user"
  fi
}

user_ids () {
  if [ -n "$root" ]; then
    awk -F: -v name="$user" '$1 == name { print $3 ":" $4 }' "$root/etc/passwd"
  else
    echo "$(id -u "$user"):$(id -g "$user")"
  fi
}

# The config (created from the template at first install, kept after), readable by the agent's
# group only (it may hold an enrollment token), and the data folder, owned by the agent's user.
configure () {
  ensure_user
  ids=$(user_ids)
  install -d -m 0755 "$root/etc/meshdeploy"
  [ -e "$config" ] || install -m 0640 "$root${CONFIG_TEMPLATE_PATH}" "$config"
  chown "0:\${ids#*:}" "$config"
  chmod 0640 "$config"
  install -d -m 0750 "$data"
  chown "$ids" "$data"
  systemd_running || return 0
  systemctl daemon-reload || true
  if ! configured; then
    echo "meshdeploy-agent: set coordinator and enrollToken in ${CONFIG_PATH}, then run: systemctl enable --now meshdeploy-agent" >&2
    return 0
  fi
  systemctl enable ${UNIT_NAME} >/dev/null 2>&1 || true
  if [ "$1" = upgrade ]; then
    systemctl try-restart ${UNIT_NAME} || true
  else
    systemctl start ${UNIT_NAME} || echo "meshdeploy-agent: the agent did not start; see: journalctl -u meshdeploy-agent" >&2
  fi
}

stop_and_disable () {
  systemd_running || return 0
  systemctl stop ${UNIT_NAME} || true
  systemctl disable ${UNIT_NAME} >/dev/null 2>&1 || true
}

# The device's identity, task state and chunk cache, and its settings.
forget_identity () {
  rm -f "$config"
  rmdir "$root/etc/meshdeploy" 2>/dev/null || true
  rm -rf "$data"
}
`
}

function script (name: string, body: string): string {
  return `#!/bin/sh
# meshdeploy-agent ${name}
set -e

${common()}
${body}
exit 0
`
}

/** Debian's maintainer scripts: postinst configures (and starts once configured), prerm stops on removal, postrm forgets the identity on purge only. */
export function debianMaintainerScripts (): { postinst: string, prerm: string, postrm: string } {
  return {
    postinst: script('postinst', `case "$1" in
  configure)
    # $2 is the version configured before: empty on a first install.
    if [ -z "\${2:-}" ]; then configure install; else configure upgrade; fi
    ;;
esac
`),
    prerm: script('prerm', `case "$1" in
  remove|deconfigure) stop_and_disable ;;
esac
`),
    postrm: script('postrm', `case "$1" in
  purge) forget_identity ;;
esac
if systemd_running; then systemctl daemon-reload || true; fi
`)
  }
}

/**
 * RPM's scriptlets ($1 counts the installed versions after the operation):
 * %pre makes the user, %post configures, %preun stops on the last removal.
 * RPM has no purge: removing keeps the identity in /var/lib/meshdeploy-agent.
 */
export function rpmScriptlets (): { pre: string, post: string, preun: string, postun: string } {
  const body = (text: string): string => `${common()}\n${text}`
  return {
    pre: body('ensure_user\n'),
    post: body('if [ "$1" -ge 2 ]; then configure upgrade; else configure install; fi\n'),
    preun: body('if [ "$1" -eq 0 ]; then stop_and_disable; fi\n'),
    postun: body('if systemd_running; then systemctl daemon-reload || true; fi\n')
  }
}
