import { Command } from 'commander'
import { clientFrom, print, printJson, run, UsageError, withApiOptions } from '../context.js'

const NAMES: Record<string, string> = {
  'security-verification': 'securityVerification',
  'auto-approve-requests': 'autoApproveRequests'
}

function parseSwitch (value: string): boolean {
  if (['on', 'true', 'yes', '1'].includes(value.toLowerCase())) return true
  if (['off', 'false', 'no', '0'].includes(value.toLowerCase())) return false
  throw new UsageError(`${value} is not on or off`)
}

function render (settings: Record<string, boolean>): string {
  return Object.entries(NAMES).map(([name, field]) => `${name.padEnd(24)} ${settings[field] ? 'on' : 'off'}`).join('\n')
}

export function settingsCommand (): Command {
  const settings = new Command('settings').description('organisation settings: security verification, auto-approval of requests')

  withApiOptions(settings.command('show', { isDefault: true }))
    .description('show the settings')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const current = await client.get('/v1/settings')
        client.close()
        if (options.json === true) return printJson(current)
        print(render(current))
      })
    })

  withApiOptions(settings.command('set <assignments...>'))
    .description('change settings: NAME=on|off')
    .addHelpText('after', '\nSettings:\n  security-verification   uploads must carry a publisher signature that verifies against a registered key (default off)\n  auto-approve-requests   approve self-service requests as they arrive (default off)\n\nExample:\n  meshdeploy settings set security-verification=on')
    .action(async (assignments: string[], options) => {
      await run(async () => {
        const patch: Record<string, boolean> = {}
        for (const assignment of assignments) {
          const [name, value] = assignment.split('=')
          const field = NAMES[name]
          if (field === undefined || value === undefined) throw new UsageError(`${assignment}: expected NAME=on|off with NAME among ${Object.keys(NAMES).join(', ')}`)
          patch[field] = parseSwitch(value)
        }
        const client = clientFrom(options)
        const updated = await client.patch('/v1/settings', patch)
        client.close()
        if (options.json === true) return printJson(updated)
        print(render(updated))
      })
    })
  return settings
}
