import { Command } from 'commander'
import { clientFrom, EXIT, positiveInteger, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { taskFieldsFrom, withTaskOptions } from '../task-options.js'
import { formatBytes, shortId, table } from '../format.js'
import { resolvePackageId } from './packages.js'
import { renderProgress, watchTask } from '../watch.js'

export function taskCommand (): Command {
  const task = new Command('task').description('create and follow deployment tasks')

  withTaskOptions(withApiOptions(task.command('create')))
    .description('create a task for a package: install, uninstall or distribute files, now or at a time')
    .requiredOption('--package <id>', 'package id (or a unique prefix)')
    .option('--action <action>', 'install, uninstall or distribute-files', 'install')
    .addHelpText('after', `
Examples:
  meshdeploy task create --package 3f9a0c1b --groups finance --run-args "/S" --devices-per-minute 20 --defer-while-vpn
  meshdeploy task create --package 3f9a0c1b --departments Sales --roles manager --start-at 2026-12-01T22:00:00+01:00 --reboot prompt --reboot-deadline-seconds 3600
  meshdeploy task create --package 3f9a0c1b --action distribute-files --destination /opt/data --file-mode 0644 --overwrite keep --sites berlin
  meshdeploy task create --package 3f9a0c1b --action uninstall --all
  meshdeploy task create --package 3f9a0c1b --all --phase groups=pilot,success=95,soak=1d --phase percent=10,halt=2 --phase rest --maintenance-windows respect`)
    .action(async options => {
      await run(async () => {
        const fields = taskFieldsFrom(options, false)
        if (fields.targets === undefined) throw new UsageError('name targets: --devices, --groups, --sites, --users, --departments, --roles or --all')
        const client = clientFrom(options)
        const created = await client.post('/v1/tasks', { packageId: await resolvePackageId(client, options.package), action: options.action, ...fields })
        client.close()
        if (options.json === true) return printJson(created)
        print(`created task ${created.id} (${created.name}), ${created.phase}; its targets resolve to ${created.resolvedDevices} device(s) now`)
      })
    })

  withTaskOptions(withApiOptions(task.command('edit <id>')))
    .description('edit a task that has not started, is paused or has expired; devices pick up the new revision')
    .addHelpText('after', '\nExamples:\n  meshdeploy task pause task-3f9a && meshdeploy task edit task-3f9a --max-attempts 5 --run-args "/S /norestart" && meshdeploy task resume task-3f9a\n  meshdeploy task edit task-3f9a --valid-for-seconds 604800 --devices-per-minute none')
    .action(async (id: string, options) => {
      await run(async () => {
        const fields = taskFieldsFrom(options, true)
        if (Object.keys(fields).length === 0) throw new UsageError('name at least one setting to change')
        const client = clientFrom(options)
        const view = await client.patch(`/v1/tasks/${id}`, fields)
        client.close()
        if (options.json === true) return printJson(view)
        print(`task ${view.id} is at revision ${view.revision}, ${view.phase}`)
      })
    })

  for (const [verb, description] of [
    ['pause', 'pause a task: no more devices start; those downloading or installing finish'],
    ['resume', 'resume a paused task'],
    ['rerun', 're-run a task for its failed devices: their attempt counters start again']
  ] as const) {
    withApiOptions(task.command(`${verb} <id>`))
      .description(description)
      .action(async (id: string, options) => {
        await run(async () => {
          const client = clientFrom(options)
          const view = await client.post(`/v1/tasks/${id}/${verb}`)
          client.close()
          if (options.json === true) return printJson(view)
          print(verb === 'rerun' ? `task ${view.id}: ${view.rerunDevices} failed device(s) run again (revision ${view.revision})` : `task ${view.id} is ${view.phase}`)
        })
      })
  }

  withApiOptions(task.command('next-phase <id>'))
    .description('start the next ring of a phased rollout now (a halted rollout goes on)')
    .addHelpText('after', '\nExample:\n  meshdeploy task next-phase task-3f9a')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const view = await client.post(`/v1/tasks/${id}/phases/next`)
        client.close()
        if (options.json === true) return printJson(view)
        const ring = view.rings?.find((candidate: any) => candidate.status === 'active')
        print(`task ${view.id}: ${ring?.name ?? 'the next ring'} started (${ring?.total ?? 0} device(s)), ${view.phase}`)
      })
    })

  withApiOptions(task.command('halt <id>'))
    .description('halt a task: no more devices are released or start; resume it or start the next ring to go on')
    .option('--reason <text>', 'why, for the task\'s record')
    .addHelpText('after', '\nExample:\n  meshdeploy task halt task-3f9a --reason "help desk reports crashes"')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const view = await client.post(`/v1/tasks/${id}/halt`, options.reason !== undefined ? { reason: options.reason } : {})
        client.close()
        if (options.json === true) return printJson(view)
        print(`task ${view.id} halted: ${view.halted?.reason as string}`)
      })
    })

  withApiOptions(task.command('delete <id>'))
    .description('delete a task (cannot be undone): no more devices start; those already downloading or installing finish')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const answer = await client.delete(`/v1/tasks/${id}`)
        client.close()
        if (options.json === true) return printJson(answer)
        print(answer.message)
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
        print(table(['ID', 'NAME', 'PHASE', 'DEVICES', 'DONE', 'FAILED', 'PROGRESS', 'FROM PEERS'], tasks.map((t: any) => [
          t.id, t.name, t.phase, t.progress.total, t.progress.succeeded, t.progress.failed, `${t.progress.percent}%`, `${(t.progress.peerShare * 100).toFixed(0)}%`
        ])))
      })
    })

  withApiOptions(task.command('show <id>'))
    .description('show a task and its devices')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const [view, devices] = await Promise.all([client.get(`/v1/tasks/${id}`), client.getEvery(`/v1/tasks/${id}/devices`, 'devices')])
        client.close()
        const rows = { devices: devices.sort((a: any, b: any) => String(a.hostname).localeCompare(String(b.hostname))) }
        if (options.json === true) return printJson({ ...view, devices: rows.devices })
        const rate = view.devicesPerMinute !== undefined ? `${view.devicesPerMinute} device(s) per minute` : 'no rate limit'
        const reboot = view.reboot.policy === 'prompt' ? `prompt (forced after ${view.reboot.deadlineSeconds ?? 900} s)` : view.reboot.policy
        print(`${view.id}  ${view.name}\n  package ${view.package?.name ?? '(deleted)'} ${view.package?.version ?? ''} (${shortId(view.packageId)}), action ${view.action}, ${view.phase}, revision ${view.revision}\n  starts ${view.startAt}, valid until ${view.validUntil}; ${rate}; ${view.releasedDevices} released; attempts ${view.maxAttempts}, retry after ${view.retryDelaySeconds} s; reboot ${reboot}${view.deferWhileVpn === true ? '; waits while a VPN is up' : ''}\n  progress ${view.progress.percent}% — ${view.progress.succeeded} succeeded, ${view.progress.failed} failed of ${view.progress.total}; from peers ${formatBytes(view.progress.bytesFromPeers)}, from origin ${formatBytes(view.progress.bytesFromOrigin)}\n`)
        if (view.halted !== undefined) print(`  HALTED ${view.halted.at}: ${view.halted.reason}\n`)
        if (view.rings !== undefined) {
          print(table(['RING', 'NAME', 'STATUS', 'DEVICES', 'SUCCEEDED', 'FAILED', 'THRESHOLD', 'HALT OVER', 'STARTED', 'SOAK UNTIL'], view.rings.map((r: any) => [
            r.index + 1, r.name, r.status, r.total, `${r.succeeded} (${r.percentSucceeded}%)`, `${r.failed} (${r.percentFailed}%)`, `${r.successPercent}%`, `${r.maxFailurePercent}%`, r.startedAt ?? '-', r.soakUntil ?? '-'
          ])) + '\n')
        }
        print(table(['DEVICE', 'HOST', 'SITE', 'STATE', 'DONE', 'PEERS', 'ORIGIN', 'ATTEMPT', 'EXIT', 'MESSAGE'], rows.devices.map((r: any) => [
          shortId(r.deviceId, 20), r.hostname, r.site, r.state, r.bytesTotal > 0 ? `${Math.round(100 * r.bytesDone / r.bytesTotal)}%` : '-',
          formatBytes(r.bytesFromPeers), formatBytes(r.bytesFromOrigin), r.attempt, r.exitCode, r.message?.slice(0, 60)
        ])))
      })
    })

  withApiOptions(task.command('history <id> <device>'))
    .description('every status record a device reported for a task, oldest first')
    .action(async (id: string, device: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const { records } = await client.get(`/v1/tasks/${encodeURIComponent(id)}/devices/${encodeURIComponent(device)}/history`)
        client.close()
        if (options.json === true) return printJson(records)
        print(table(['TIME', 'REV', 'ATTEMPT', 'SEQ', 'STATE', 'DONE', 'PEERS', 'ORIGIN', 'EXIT', 'MESSAGE'], records.map((r: any) => [
          new Date(r.at).toISOString(), r.revision, r.attempt, r.seq, r.state, r.bytesTotal > 0 ? `${Math.round(100 * r.bytesDone / r.bytesTotal)}%` : '-',
          formatBytes(r.bytesFromPeers), formatBytes(r.bytesFromOrigin), r.exitCode, r.message?.slice(0, 60)
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
