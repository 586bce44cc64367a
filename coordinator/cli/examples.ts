import type { Command } from 'commander'

/**
 * Examples shown under `meshdeploy <command> --help`, for commands whose
 * definition does not carry its own. Ids are shortened as the tables print them.
 */
export const EXAMPLES: Readonly<Record<string, string[]>> = {
  'package list': ['meshdeploy package list', 'meshdeploy package list --json | jq -r \'.[] | select(.platform=="windows") | .id\''],
  'package show': ['meshdeploy package show 3f9a0c1b'],
  'capture show': ['meshdeploy capture show app-1.0.capture.tar.gz', 'meshdeploy capture show app-1.0.capture.tar.gz --json'],
  'package rm': ['meshdeploy package rm 3f9a0c1b'],
  'task pause': ['meshdeploy task pause task-3f9a0c1b7d2e4a65'],
  'task resume': ['meshdeploy task resume task-3f9a0c1b7d2e4a65'],
  'task rerun': ['meshdeploy task rerun task-3f9a0c1b7d2e4a65'],
  'task delete': ['meshdeploy task delete task-3f9a0c1b7d2e4a65'],
  'task list': ['meshdeploy task list', 'meshdeploy task list --json | jq \'.[] | {id, percent: .progress.percent}\''],
  'task show': ['meshdeploy task show task-3f9a0c1b7d2e4a65'],
  'task history': ['meshdeploy task history task-3f9a0c1b7d2e4a65 dev-0a1b2c3d4e5f6a7b'],
  'task watch': ['meshdeploy task watch task-3f9a0c1b7d2e4a65 && echo "every device succeeded"'],
  'task cancel': ['meshdeploy task cancel task-3f9a0c1b7d2e4a65'],
  'device list': ['meshdeploy device list', 'meshdeploy device list --json | jq -r \'.[] | select(.online|not) | .hostname\''],
  'device show': ['meshdeploy device show dev-0a1b2c3d4e5f6a7b'],
  'device block': ['meshdeploy device block dev-0a1b2c3d4e5f6a7b --reason "reported stolen"'],
  'device unblock': ['meshdeploy device unblock dev-0a1b2c3d4e5f6a7b'],
  'device retire': ['meshdeploy device retire dev-0a1b2c3d4e5f6a7b --reason "decommissioned"'],
  'device edit': ['meshdeploy device edit dev-0a1b2c3d4e5f6a7b --site berlin --add-groups finance'],
  'device clear-cache': ['meshdeploy device clear-cache dev-0a1b2c3d4e5f6a7b'],
  'site create': ['meshdeploy site create berlin --description "Berlin branch"'],
  'site list': ['meshdeploy site list'],
  'site rm': ['meshdeploy site rm berlin'],
  'boundary list': ['meshdeploy boundary list'],
  'boundary rm': ['meshdeploy boundary rm bnd-0a1b2c3d4e5f6a7b'],
  'window list': ['meshdeploy window list', 'meshdeploy window list --site berlin', 'meshdeploy window list --device dev-0a1b2c3d4e5f6a7b'],
  'window show': ['meshdeploy window show mw-0a1b2c3d4e5f6a7b'],
  'window rm': ['meshdeploy window rm mw-0a1b2c3d4e5f6a7b'],
  'enrollment-token create': ['meshdeploy enrollment-token create --max-uses 200 --site berlin --groups laptops'],
  'enrollment-token list': ['meshdeploy enrollment-token list'],
  'enrollment-token revoke': ['meshdeploy enrollment-token revoke enr-0a1b2c3d4e5f6a7b'],
  'token list': ['meshdeploy token list'],
  'token revoke': ['meshdeploy token revoke tok-0a1b2c3d4e5f6a7b'],
  'key show': ['meshdeploy key show'],
  'key rotate': ['meshdeploy key rotate'],
  'publisher keygen': ['meshdeploy publisher keygen --out ./acme-publisher.key'],
  'publisher add': ['meshdeploy publisher add "ACME Corp" --key ./acme-publisher.key   # only the public half is sent'],
  'publisher list': ['meshdeploy publisher list'],
  'publisher rm': ['meshdeploy publisher rm 0a1b2c3d4e5f6a7b0a1b2c3d4e5f6a7b'],
  'request list': ['meshdeploy request list --status pending'],
  'request create': ['meshdeploy request create --package 3f9a0c1b --device pc-0042 --user alice'],
  'request approve': ['meshdeploy request approve req-0a1b2c3d4e5f6a7b'],
  'request deny': ['meshdeploy request deny req-0a1b2c3d4e5f6a7b --comment "use the licensed edition"'],
  'user import': ['meshdeploy user import ./staff.csv --replace'],
  'user list': ['meshdeploy user list'],
  'user show': ['meshdeploy user show alice'],
  'user rm': ['meshdeploy user rm alice'],
  'settings show': ['meshdeploy settings show'],
  health: ['meshdeploy health --url https://deploy.example.org:8650'],
  whoami: ['meshdeploy whoami'],
  stats: ['meshdeploy stats'],
  metrics: ['meshdeploy metrics | grep meshdeploy_task_devices'],
  openapi: ['meshdeploy openapi > meshdeploy-openapi.json'],
  demo: ['npm run demo', 'meshdeploy demo --agents 10 --sites 2 --payload-mib 64 --keep'],
  'agent catalog': ['meshdeploy agent catalog --data /var/lib/meshdeploy-agent'],
  'agent requests': ['meshdeploy agent requests --data /var/lib/meshdeploy-agent']
}

function hasExample (command: Command): boolean {
  let text = ''
  command.configureOutput({ writeOut: chunk => { text += chunk } })
  command.outputHelp()
  command.configureOutput({ writeOut: chunk => { process.stdout.write(chunk) } })
  return /Examples?:/.test(text)
}

/** Adds the examples of the table to the commands that have none of their own. */
export function addExamples (root: Command): void {
  const walk = (command: Command, prefix: string): void => {
    for (const child of command.commands) {
      const path = `${prefix} ${child.name()}`.trim()
      const examples = EXAMPLES[path]
      if (examples !== undefined && !hasExample(child)) {
        child.addHelpText('after', `\n${examples.length === 1 ? 'Example' : 'Examples'}:\n${examples.map(line => `  ${line}`).join('\n')}`)
      }
      walk(child, path)
    }
  }
  walk(root, '')
}
