import { Command } from 'commander'
import { clientFrom, list, print, printJson, run, UsageError, withApiOptions } from '../context.js'
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
        print(table(['ID', 'HOST', 'SITE', 'GROUPS', 'PLATFORM', 'STATUS', 'ONLINE', 'LAST CONTACT'], devices.map((d: any) => [
          d.id, d.hostname, d.site, d.groups.join(',') || '-', `${d.platform}/${d.arch}`, d.status, d.online ? 'yes' : 'no', d.lastSeenAt
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
        const statusLine = view.status === 'active' ? 'active' : `${view.status} since ${view.statusChangedAt} by ${view.statusChangedBy}${view.statusReason !== undefined ? ` (${view.statusReason})` : ''}`
        const users = view.users.map((u: any) => `${u.id}${u.department !== undefined ? ` (${u.department}${u.role !== undefined ? `, ${u.role}` : ''})` : ''}`).join(', ')
        const mesh = [
          `  peer id ${view.peerId as string}, ${view.connectedPeers ?? 0} peers connected, addresses ${(view.peerAddresses ?? []).join(' ') || '- (peer sharing off)'}`,
          view.siteCache === true ? '  site cache: prefetches the packages of its site\'s tasks' : undefined,
          view.statusRelay === true ? '  status relay: sends its site\'s status records up in batches' : undefined,
          view.cache !== undefined ? `  cache ${formatBytes(view.cache.usedBytes)} of ${formatBytes(view.cache.limitBytes)} (${formatBytes(view.cache.pinnedBytes)} pinned, ${view.cache.packages as number} packages)` : undefined
        ].filter(line => line !== undefined).join('\n')
        print(`${view.id}  ${view.hostname}\n  site ${view.site} (${view.siteSource ?? 'declared'}), groups ${view.groups.join(',') || '-'}, ${view.platform}/${view.arch}, ${view.online ? 'online' : 'offline'}, last contact ${view.lastSeenAt ?? 'never'}\n  status ${statusLine}\n  used by ${users || 'nobody in the directory'}\n${mesh}\n`)
        print(table(['TASK', 'NAME', 'STATE', 'ATTEMPT', 'EXIT', 'UPDATED', 'MESSAGE'], view.tasks.map((t: any) => [t.taskId, t.taskName, t.state, t.attempt, t.exitCode, t.updatedAt, t.message?.slice(0, 60)])))
      })
    })
  const changes: Array<[string, string]> = [
    ['block', 'block a device: its credential fails at once, it leaves every target and the peer allow-list (undo with unblock)'],
    ['unblock', 'unblock a blocked device'],
    ['retire', 'retire a device for good: its credential fails from now on, it leaves every target and the peer allow-list']
  ]
  for (const [action, description] of changes) {
    withApiOptions(device.command(`${action} <id>`))
      .description(description)
      .option('--reason <text>', 'why, kept on the device and in the audit log')
      .action(async (id: string, options) => {
        await run(async () => {
          const client = clientFrom(options)
          const view = await client.post(`/v1/devices/${encodeURIComponent(id)}/${action}`, options.reason !== undefined ? { reason: options.reason } : {})
          client.close()
          if (options.json === true) return printJson(view)
          print(`device ${view.id} (${view.hostname}) is ${view.status}`)
        })
      })
  }
  withApiOptions(device.command('edit <id>'))
    .description('move a device to another site or change its static groups')
    .option('--site <name>', 'the device\'s site')
    .option('--groups <names>', 'replace its groups, comma separated', list)
    .option('--add-groups <names>', 'add groups', list)
    .option('--remove-groups <names>', 'remove groups', list)
    .action(async (id: string, options) => {
      await run(async () => {
        const body: Record<string, unknown> = {}
        for (const key of ['site', 'groups', 'addGroups', 'removeGroups'] as const) if (options[key] !== undefined) body[key] = options[key]
        if (Object.keys(body).length === 0) throw new UsageError('give --site, --groups, --add-groups or --remove-groups')
        const client = clientFrom(options)
        const view = await client.patch(`/v1/devices/${id}`, body)
        client.close()
        if (options.json === true) return printJson(view)
        print(`${view.hostname}: site ${view.site}, groups ${view.groups.join(',') || '-'}`)
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
