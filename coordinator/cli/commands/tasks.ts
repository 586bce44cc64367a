import { Command } from 'commander'
import { clientFrom, EXIT, list, positiveInteger, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { formatBytes, shortId, table } from '../format.js'
import { resolvePackageId } from './packages.js'
import { renderProgress, watchTask } from '../watch.js'

export function taskCommand (): Command {
  const task = new Command('task').description('create and follow deployment tasks')

  withApiOptions(task.command('create'))
    .description('create a task for a package')
    .requiredOption('--package <id>', 'package id (or a unique prefix)')
    .option('--action <action>', 'install or distribute-files', 'install')
    .option('--devices <ids>', 'target devices by id or host name, comma separated', list)
    .option('--groups <names>', 'target groups, comma separated', list)
    .option('--sites <names>', 'target sites, comma separated', list)
    .option('--all', 'target every device')
    .option('--name <name>', 'task name')
    .option('--run-args <args>', 'silent-install arguments, e.g. "/S /quiet"')
    .option('--bandwidth-kbps <n>', 'per-device download cap, KB/s', positiveInteger)
    .option('--destination <dir>', 'destination folder for distribute-files')
    .option('--entry <path>', 'script inside an archive to run (default install.sh)')
    .option('--timeout-seconds <n>', 'installer timeout', positiveInteger)
    .option('--max-attempts <n>', 'attempts before a device fails for good', positiveInteger)
    .option('--retry-delay-seconds <n>', 'wait between attempts', value => value === '0' ? 0 : positiveInteger(value))
    .option('--valid-for-seconds <n>', 'how long the task dispatches', positiveInteger)
    .addHelpText('after', '\nExamples:\n  meshdeploy task create --package 3f9a0c1b --groups finance --run-args "--quiet"\n  meshdeploy task create --package 3f9a0c1b --action distribute-files --destination /opt/data --sites berlin')
    .action(async options => {
      await run(async () => {
        if (options.all !== true && options.devices === undefined && options.groups === undefined && options.sites === undefined) {
          throw new UsageError('name targets: --devices, --groups, --sites or --all')
        }
        const client = clientFrom(options)
        const targets: Record<string, unknown> = {}
        if (options.all === true) targets.all = true
        for (const key of ['devices', 'groups', 'sites'] as const) if (options[key] !== undefined) targets[key === 'devices' ? 'deviceIds' : key] = options[key]
        const body: Record<string, unknown> = { packageId: await resolvePackageId(client, options.package), action: options.action, targets }
        const optional: Record<string, string> = {
          name: 'name', runArgs: 'runArgs', bandwidthKbps: 'bandwidthKBps', destination: 'destination', entry: 'entry',
          timeoutSeconds: 'timeoutSeconds', maxAttempts: 'maxAttempts', retryDelaySeconds: 'retryDelaySeconds', validForSeconds: 'validForSeconds'
        }
        for (const [option, field] of Object.entries(optional)) if (options[option] !== undefined) body[field] = options[option]
        const created = await client.post('/v1/tasks', body)
        client.close()
        if (options.json === true) return printJson(created)
        print(`created task ${created.id} (${created.name}); its targets resolve to ${created.resolvedDevices} device(s) now`)
      })
    })

  withApiOptions(task.command('list'))
    .description('list tasks with their progress')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { tasks } = await client.get('/v1/tasks')
        client.close()
        if (options.json === true) return printJson(tasks)
        print(table(['ID', 'NAME', 'STATUS', 'DEVICES', 'DONE', 'FAILED', 'PROGRESS', 'FROM PEERS'], tasks.map((t: any) => [
          t.id, t.name, t.status, t.progress.total, t.progress.succeeded, t.progress.failed, `${t.progress.percent}%`, `${(t.progress.peerShare * 100).toFixed(0)}%`
        ])))
      })
    })

  withApiOptions(task.command('show <id>'))
    .description('show a task and its devices')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const [view, rows] = await Promise.all([client.get(`/v1/tasks/${id}`), client.get(`/v1/tasks/${id}/devices`)])
        client.close()
        if (options.json === true) return printJson({ ...view, devices: rows.devices })
        print(`${view.id}  ${view.name}\n  package ${view.package?.name ?? '(deleted)'} ${view.package?.version ?? ''} (${shortId(view.packageId)}), action ${view.action}, status ${view.status}, revision ${view.revision}\n  progress ${view.progress.percent}% — ${view.progress.succeeded} succeeded, ${view.progress.failed} failed of ${view.progress.total}; from peers ${formatBytes(view.progress.bytesFromPeers)}, from origin ${formatBytes(view.progress.bytesFromOrigin)}\n`)
        print(table(['DEVICE', 'HOST', 'SITE', 'STATE', 'DONE', 'PEERS', 'ORIGIN', 'ATTEMPT', 'EXIT', 'MESSAGE'], rows.devices.map((r: any) => [
          shortId(r.deviceId, 20), r.hostname, r.site, r.state, r.bytesTotal > 0 ? `${Math.round(100 * r.bytesDone / r.bytesTotal)}%` : '-',
          formatBytes(r.bytesFromPeers), formatBytes(r.bytesFromOrigin), r.attempt, r.exitCode, r.message?.slice(0, 60)
        ])))
      })
    })

  withApiOptions(task.command('watch <id>'))
    .description('follow a task live until every device has settled (redrawn on the coordinator\'s events); exits 1 if any device failed')
    .option('--interval-ms <n>', 'polling interval while the event stream is unavailable, and the shortest time between redraws', positiveInteger, 1000)
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const final = await watchTask(client, id, { intervalMs: options.intervalMs, output: options.json === true ? process.stderr : process.stdout })
        client.close()
        if (options.json === true) printJson({ ...final.task, devices: final.devices })
        else if (process.stdout.isTTY !== true) print(renderProgress(final).join('\n'))
        return final.task.progress.failed > 0 ? EXIT.taskFailed : EXIT.ok
      })
    })

  withApiOptions(task.command('cancel <id>'))
    .description('cancel a task: no more devices start it; running installs finish')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const view = await client.post(`/v1/tasks/${id}/cancel`)
        client.close()
        if (options.json === true) return printJson(view)
        print(`task ${view.id} is ${view.status}`)
      })
    })
  return task
}
