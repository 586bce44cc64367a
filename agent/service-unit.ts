import { execFile } from 'node:child_process'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Quotes a word for a systemd ExecStart line. */
export function systemdQuote (word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word
  return `"${word.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\$/g, '$$$$').replace(/%/g, '%%')}"`
}

export interface UnitInit {
  /** Program and arguments the service runs. */
  command: string[]
  /** @default 'meshdeploy agent' */
  description?: string
}

/** The systemd unit of the agent: restarts on failure, stops with SIGTERM so the agent can finish cleanly. */
export function renderAgentUnit (init: UnitInit): string {
  return `[Unit]
Description=${init.description ?? 'meshdeploy agent'}
Documentation=https://github.com/meshdeploy/meshdeploy
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${init.command.map(systemdQuote).join(' ')}
Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=120
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`
}

export interface InstallServiceInit {
  name: string
  unitDir: string
  command: string[]
  enable: boolean
  log: (line: string) => void
}

/** Writes the unit atomically and, unless told not to, reloads systemd and enables and starts it. */
export async function installService (init: InstallServiceInit): Promise<string> {
  const unitPath = join(init.unitDir, `${init.name}.service`)
  await mkdir(init.unitDir, { recursive: true })
  const temporary = `${unitPath}.tmp`
  await writeFile(temporary, renderAgentUnit({ command: init.command }), { mode: 0o644 })
  await rename(temporary, unitPath)
  init.log(`wrote ${unitPath}`)
  if (!init.enable) {
    init.log(`not enabled; to start it: systemctl daemon-reload && systemctl enable --now ${init.name}`)
    return unitPath
  }
  for (const args of [['daemon-reload'], ['enable', '--now', `${init.name}.service`]]) {
    try {
      await run('systemctl', args)
    } catch (error) {
      const failed = error as NodeJS.ErrnoException & { stderr?: string }
      const reason = failed.code === 'ENOENT' ? 'systemctl is not available on this machine' : (failed.stderr ?? failed.message).trim()
      throw new Error(`systemctl ${args.join(' ')} failed: ${reason}`)
    }
    init.log(`ran systemctl ${args.join(' ')}`)
  }
  return unitPath
}
