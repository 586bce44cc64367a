import { Command } from 'commander'
import { clientFrom, print, printJson, run, withApiOptions } from '../context.js'
import { table } from '../format.js'

export function deviceCommand (): Command {
  const device = new Command('device').description('enrolled devices')

  withApiOptions(device.command('list'))
    .description('list devices')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { devices } = await client.get('/v1/devices')
        client.close()
        if (options.json === true) return printJson(devices)
        print(table(['ID', 'HOST', 'SITE', 'GROUPS', 'PLATFORM', 'ONLINE', 'LAST CONTACT'], devices.map((d: any) => [
          d.id, d.hostname, d.site, d.groups.join(',') || '-', `${d.platform}/${d.arch}`, d.online ? 'yes' : 'no', d.lastSeenAt
        ])))
      })
    })

  withApiOptions(device.command('show <id>'))
    .description('show a device and its task history')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const view = await client.get(`/v1/devices/${id}`)
        client.close()
        if (options.json === true) return printJson(view)
        print(`${view.id}  ${view.hostname}\n  site ${view.site}, groups ${view.groups.join(',') || '-'}, ${view.platform}/${view.arch}, ${view.online ? 'online' : 'offline'}, last contact ${view.lastSeenAt ?? 'never'}\n  peer id ${view.peerId}\n`)
        print(table(['TASK', 'NAME', 'STATE', 'ATTEMPT', 'EXIT', 'UPDATED', 'MESSAGE'], view.tasks.map((t: any) => [t.taskId, t.taskName, t.state, t.attempt, t.exitCode, t.updatedAt, t.message?.slice(0, 60)])))
      })
    })
  return device
}
