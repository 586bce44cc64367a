/**
 * What a capture leaves out unless told otherwise: folders whose content is
 * the machine's own state or churns by itself (temporary files, logs,
 * caches, the package managers' databases, which the package lists stand
 * for), files that identify the machine (machine id, SSH host keys) or hold
 * its accounts (a copy would replace the target's users), and editors' and
 * interpreters' scratch files.
 */
export const DEFAULT_EXCLUDES: readonly string[] = [
  '/tmp', '/var/tmp', '/var/log', '/var/cache', '/proc', '/sys', '/run', '/dev', '/var/run', '/var/lock', '/var/spool', '/var/backups',
  '/var/lib/dpkg', '/var/lib/apt', '/var/lib/rpm', '/var/lib/dnf', '/var/lib/yum', '/var/lib/systemd', '/var/lib/dhcp', '/lost+found',
  '/etc/machine-id', '/etc/hostname', '/etc/adjtime', '/etc/mtab', '/etc/ld.so.cache', '/etc/resolv.conf', '/etc/ssh/ssh_host_*',
  '/etc/passwd', '/etc/passwd-', '/etc/group', '/etc/group-', '/etc/shadow', '/etc/shadow-', '/etc/gshadow', '/etc/gshadow-', '/etc/subuid', '/etc/subgid',
  '*.swp', '*.swo', '*.swx', '*~', '.#*', '#*#', '*.pyc', '__pycache__', '.cache', '.DS_Store'
]

function escape (text: string): string {
  return text.replace(/[.+^${}()|[\]\\]/g, '\\$&')
}

/** A glob as a regular expression: `**` any depth, `*` and `?` within one name. */
function globToRegExp (glob: string): RegExp {
  let source = ''
  for (let index = 0; index < glob.length; index++) {
    const char = glob[index]
    if (char === '*' && glob[index + 1] === '*') {
      source += '.*'
      index++
    } else if (char === '*') {
      source += '[^/]*'
    } else if (char === '?') {
      source += '[^/]'
    } else {
      source += escape(char)
    }
  }
  return new RegExp(`^${source}$`)
}

/**
 * Matches captured paths against exclusion globs. A glob with a slash
 * matches the whole path (`/var/log`, `/etc/ssh/ssh_host_*`, `/opt/**\/*.log`);
 * one without matches a name at any depth (`*.swp`, `__pycache__`). An
 * excluded folder is not entered.
 */
export class ExcludeMatcher {
  private readonly paths: RegExp[] = []
  private readonly names: RegExp[] = []

  constructor (globs: readonly string[]) {
    for (const glob of globs) {
      const trimmed = glob.length > 1 ? glob.replace(/\/+$/, '') : glob
      if (trimmed.includes('/')) this.paths.push(globToRegExp(trimmed))
      else this.names.push(globToRegExp(trimmed))
    }
  }

  excludes (path: string): boolean {
    const name = path.slice(path.lastIndexOf('/') + 1)
    return this.names.some(pattern => pattern.test(name)) || this.paths.some(pattern => pattern.test(path))
  }
}
