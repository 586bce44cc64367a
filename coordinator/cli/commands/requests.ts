import { Command } from 'commander'
import { clientFrom, print, printJson, run, withApiOptions } from '../context.js'
import { table } from '../format.js'

export function requestCommand (): Command {
  const request = new Command('request').description('self-service requests: list, approve, deny')

  withApiOptions(request.command('list'))
    .description('list requests, newest first')
    .option('--status <status>', 'pending, approved or denied')
    .option('--device <id>', 'of one device')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const query = new URLSearchParams()
        if (options.status !== undefined) query.set('status', options.status)
        if (options.device !== undefined) query.set('deviceId', options.device)
        const { requests } = await client.get(`/v1/requests${query.size > 0 ? `?${query.toString()}` : ''}`)
        client.close()
        if (options.json === true) return printJson(requests)
        print(table(['ID', 'PACKAGE', 'DEVICE', 'USER', 'STATUS', 'ASKED', 'DECIDED BY', 'TASK', 'REASON'], requests.map((r: any) => [
          r.id, `${r.packageName} ${r.packageVersion}`, r.hostname, r.user, r.status, r.createdAt, r.decidedBy, r.taskId, r.reason?.slice(0, 40)
        ])))
      })
    })

  withApiOptions(request.command('create'))
    .description('request a self-service package for a device on behalf of a user')
    .requiredOption('--package <ref>', 'package name, id or id prefix')
    .requiredOption('--device <id>', 'device id or host name')
    .option('--user <id>', 'the person asking')
    .option('--reason <text>', 'why')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const created = await client.post('/v1/requests', {
          package: options.package,
          deviceId: options.device,
          ...(options.user !== undefined ? { user: options.user } : {}),
          ...(options.reason !== undefined ? { reason: options.reason } : {})
        })
        client.close()
        if (options.json === true) return printJson(created)
        print(`request ${created.id} is ${created.status}${created.taskId !== undefined ? `; task ${created.taskId}` : ''}`)
      })
    })

  for (const verb of ['approve', 'deny'] as const) {
    withApiOptions(request.command(`${verb} <id>`))
      .description(verb === 'approve' ? 'approve a pending request: an install task for the device is created' : 'deny a pending request')
      .option('--comment <text>', 'a note for the requester')
      .action(async (id: string, options) => {
        await run(async () => {
          const client = clientFrom(options)
          const decided = await client.post(`/v1/requests/${id}/${verb}`, options.comment !== undefined ? { comment: options.comment } : {})
          client.close()
          if (options.json === true) return printJson(decided)
          print(`request ${decided.id} ${decided.status}${decided.taskId !== undefined ? `; task ${decided.taskId} installs ${decided.packageName} on ${decided.hostname}` : ''}`)
        })
      })
  }
  return request
}
