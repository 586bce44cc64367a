import { Command } from 'commander'
import { clientFrom, print, printJson, run, withApiOptions } from '../context.js'
import { formatBytes, table } from '../format.js'

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
        const mesh = [
          `  peer id ${view.peerId as string}, ${view.connectedPeers ?? 0} peers connected, addresses ${(view.peerAddresses ?? []).join(' ') || '- (peer sharing off)'}`,
          view.siteCache === true ? '  site cache: prefetches the packages of its site\'s tasks' : undefined,
          view.cache !== undefined ? `  cache ${formatBytes(view.cache.usedBytes)} of ${formatBytes(view.cache.limitBytes)} (${formatBytes(view.cache.pinnedBytes)} pinned, ${view.cache.packages as number} packages)` : undefined
        ].filter(line => line !== undefined).join('\n')
        print(`${view.id}  ${view.hostname}\n  site ${view.site} (${view.siteSource ?? 'declared'}), groups ${view.groups.join(',') || '-'}, ${view.platform}/${view.arch}, ${view.online ? 'online' : 'offline'}, last contact ${view.lastSeenAt ?? 'never'}\n${mesh}\n`)
        print(table(['TASK', 'NAME', 'STATE', 'ATTEMPT', 'EXIT', 'UPDATED', 'MESSAGE'], view.tasks.map((t: any) => [t.taskId, t.taskName, t.state, t.attempt, t.exitCode, t.updatedAt, t.message?.slice(0, 60)])))
      })
    })
  withApiOptions(device.command('clear-cache <id>'))
    .description('ask a device to empty its chunk cache of every package no task needs')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const answer = await client.post(`/v1/devices/${id}/clear-cache`)
        client.close()
        if (options.json === true) return printJson(answer)
        print(`clear-cache request ${answer.clearCacheRequest.id as number} sent to ${id}; the device carries it out at its next assignments answer`)
      })
    })
  return device
}
