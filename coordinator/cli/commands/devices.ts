import { Command } from 'commander'
import { clientFrom, list, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { formatBytes, table } from '../format.js'

export function deviceCommand (): Command {
  const device = new Command('device').description('enrolled devices')

  withApiOptions(device.command('list'))
    .description('list devices, page by page from the coordinator')
    .option('--site <name>', 'only the devices of this site')
    .option('--status <status>', 'only devices with this status: active, blocked or retired')
    .option('--limit <count>', 'at most this many devices')
    .action(async options => {
      await run(async () => {
        const maxItems = options.limit !== undefined ? Number(options.limit) : undefined
        if (maxItems !== undefined && (!Number.isInteger(maxItems) || maxItems < 1)) throw new UsageError('--limit must be a whole number of at least 1')
        const filters = new URLSearchParams()
        if (options.site !== undefined) filters.set('site', options.site)
        if (options.status !== undefined) filters.set('status', options.status)
        const client = clientFrom(options)
        const query = filters.size > 0 ? `?${filters.toString()}` : ''
        const devices = await client.getEvery(`/v1/devices${query}`, 'devices', maxItems !== undefined ? { maxItems } : {})
        client.close()
        if (options.json === true) return printJson(devices)
        print(table(['ID', 'HOST', 'SITE', 'GROUPS', 'PLATFORM', 'STATUS', 'ONLINE', 'LAST CONTACT'], devices.map((d: any) => [
          d.id, d.hostname, d.site, d.groups.join(',') || '-', `${d.platform}/${d.arch}`, d.sharedCredential !== undefined && d.status === 'active' ? `${d.status as string} (credential shared!)` : d.status, d.online ? 'yes' : 'no', d.lastSeenAt
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
          view.siteCache === true
            ? `  site cache: prefetches the packages of its site's tasks (granted by ${view.siteCacheGrantedBy as string} at ${view.siteCacheGrantedAt as string})`
            : view.siteCacheOffered === true ? `  offers to be its site's cache; not granted (meshdeploy device edit ${view.id as string} --site-cache)` : undefined,
          view.statusRelay === true ? '  status relay: sends its site\'s status records up in batches' : undefined,
          view.cache !== undefined ? `  cache ${formatBytes(view.cache.usedBytes)} of ${formatBytes(view.cache.limitBytes)} (${formatBytes(view.cache.pinnedBytes)} pinned, ${view.cache.packages as number} packages)` : undefined
        ].filter(line => line !== undefined).join('\n')
        const shared = view.sharedCredential
        if (shared !== undefined) {
          print(`WARNING: this device's credential is used by ${shared.sessions as number} agents at once (a copied agent.json?), first seen ${shared.detectedAt as string}, last ${shared.lastDetectedAt as string}, from ${(shared.addresses as string[]).join(', ') || 'unknown addresses'}.\n  Block it (meshdeploy device block ${view.id as string}) and enroll the genuine device again, or clear the warning once the copy is gone (meshdeploy device edit ${view.id as string} --clear-shared-credential).`)
        }
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
    .description('move a device to another site, change its static groups, or grant or withdraw the site-cache role')
    .option('--site <name>', 'the device\'s site')
    .option('--groups <names>', 'replace its groups, comma separated', list)
    .option('--add-groups <names>', 'add groups', list)
    .option('--remove-groups <names>', 'remove groups', list)
    .option('--site-cache', 'grant the site-cache role: the device is handed its site\'s packages to prefetch, and the origin serves it their chunks')
    .option('--no-site-cache', 'withdraw the site-cache role')
    .option('--clear-shared-credential', 'clear the warning that the device\'s credential is used by two agents at once (once the copy is gone)')
    .addHelpText('after', '\nExample:\n  meshdeploy device edit dev-3f9a0c1b7d2e4a65 --site-cache')
    .action(async (id: string, options) => {
      await run(async () => {
        const body: Record<string, unknown> = {}
        for (const key of ['site', 'groups', 'addGroups', 'removeGroups', 'siteCache', 'clearSharedCredential'] as const) if (options[key] !== undefined) body[key] = options[key]
        if (Object.keys(body).length === 0) throw new UsageError('give --site, --groups, --add-groups, --remove-groups, --site-cache, --no-site-cache or --clear-shared-credential')
        const client = clientFrom(options)
        const view = await client.patch(`/v1/devices/${id}`, body)
        client.close()
        if (options.json === true) return printJson(view)
        print(`${view.hostname}: site ${view.site}, groups ${view.groups.join(',') || '-'}, ${view.siteCache === true ? `site cache (granted by ${view.siteCacheGrantedBy as string})` : 'not a site cache'}`)
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
