import { Command } from 'commander'
import { clientFrom, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { table } from '../format.js'
import { windowFieldsFrom, withWindowOptions } from '../window-options.js'

function when (window: any): string {
  const days = window.days !== undefined ? (window.days.length === 7 ? 'daily' : window.days.join(',')) : `on ${window.date as string}`
  const hours = Math.floor(window.durationMinutes / 60)
  const minutes = window.durationMinutes % 60
  const duration = `${hours > 0 ? `${hours}h` : ''}${minutes > 0 || hours === 0 ? `${minutes}m` : ''}`
  return `${days} ${window.start as string} for ${duration} (${window.timeZone ?? 'device time'})`
}

function appliesTo (window: any): string {
  return [
    ...(window.sites ?? []).map((site: string) => `site ${site}`),
    ...(window.groups ?? []).map((group: string) => `group ${group}`),
    ...(window.deviceIds ?? []).map((device: string) => `device ${device}`)
  ].join(', ')
}

export function windowCommand (): Command {
  const command = new Command('window').description('maintenance windows: when devices of sites, groups or single devices may install and reboot')

  withWindowOptions(withApiOptions(command.command('add <name>')))
    .description('create a maintenance window (recurring with --days, or one-off with --date)')
    .addHelpText('after', `
Examples:
  meshdeploy window add "Berlin nights" --sites berlin --days mon-fri --start 22:00 --duration 4h --time-zone Europe/Berlin
  meshdeploy window add "Weekend servers" --groups servers --days sat --start 20:00 --duration 1d
  meshdeploy window add "Migration" --devices pc-0042 --date 2026-12-12 --start 18:00 --duration 6h`)
    .action(async (name: string, options) => {
      await run(async () => {
        const fields = windowFieldsFrom(options, false)
        if (fields.start === undefined || fields.durationMinutes === undefined) throw new UsageError('give --start and --duration')
        const client = clientFrom(options)
        const created = await client.post('/v1/maintenance-windows', { name, ...fields })
        client.close()
        if (options.json === true) return printJson(created)
        print(`maintenance window ${created.id as string}: ${when(created)}, for ${appliesTo(created)}${created.nextOpenings?.length > 0 ? `; opens next at ${created.nextOpenings[0] as string}` : ''}`)
      })
    })

  withApiOptions(command.command('list'))
    .description('list maintenance windows: all, of a site or group, or those that apply to a device')
    .option('--site <name>', 'the windows of this site')
    .option('--group <name>', 'the windows of this group')
    .option('--device <id>', 'the windows that apply to this device (its own, its site\'s and its groups\')')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const query = new URLSearchParams()
        for (const key of ['site', 'group', 'device'] as const) if (options[key] !== undefined) query.set(key, options[key])
        const { windows } = await client.get(`/v1/maintenance-windows${query.size > 0 ? `?${query.toString()}` : ''}`)
        client.close()
        if (options.json === true) return printJson(windows)
        print(table(['ID', 'NAME', 'WHEN', 'APPLIES TO', 'NEXT OPENING'], windows.map((w: any) => [w.id, w.name, when(w), appliesTo(w), w.nextOpenings?.[0] ?? (w.timeZone === undefined ? '(device time)' : '-')])))
      })
    })

  withApiOptions(command.command('show <id>'))
    .description('show a maintenance window and its next openings')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const window = await client.get(`/v1/maintenance-windows/${encodeURIComponent(id)}`)
        client.close()
        if (options.json === true) return printJson(window)
        print(`${window.id as string}  ${window.name as string}\n  ${when(window)}\n  applies to ${appliesTo(window)}${window.description !== undefined ? `\n  ${window.description as string}` : ''}${window.nextOpenings !== undefined ? `\n  next openings: ${(window.nextOpenings as string[]).join(', ') || 'none'}` : ''}`)
      })
    })

  withWindowOptions(withApiOptions(command.command('edit <id>')))
    .description('edit a maintenance window; the devices it concerns receive it at once')
    .option('--name <name>', 'window name')
    .addHelpText('after', '\nExample:\n  meshdeploy window edit mw-3f9a --start 23:00 --duration 3h\n  meshdeploy window edit mw-3f9a --time-zone device')
    .action(async (id: string, options) => {
      await run(async () => {
        const fields = windowFieldsFrom(options, true)
        if (options.name !== undefined) fields.name = options.name
        if (Object.keys(fields).length === 0) throw new UsageError('name at least one field to change')
        const client = clientFrom(options)
        const updated = await client.patch(`/v1/maintenance-windows/${encodeURIComponent(id)}`, fields)
        client.close()
        if (options.json === true) return printJson(updated)
        print(`maintenance window ${updated.id as string}: ${when(updated)}, for ${appliesTo(updated)}`)
      })
    })

  withApiOptions(command.command('rm <id>'))
    .description('delete a maintenance window')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const answer = await client.delete(`/v1/maintenance-windows/${encodeURIComponent(id)}`)
        client.close()
        if (options.json === true) return printJson(answer)
        print(`maintenance window ${id} deleted`)
      })
    })
  return command
}
