import { Command } from 'commander'
import { clientFrom, print, printJson, run, withApiOptions } from '../context.js'
import { table } from '../format.js'

export function siteCommand (): Command {
  const command = new Command('site').description('sites: devices of one site share content over their LAN')

  withApiOptions(command.command('create <name>'))
    .description('create a site')
    .option('--description <text>', 'what the site is')
    .action(async (name: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const created = await client.post('/v1/sites', { name, ...(options.description !== undefined ? { description: options.description } : {}) })
        client.close()
        if (options.json === true) return printJson(created)
        print(`site ${created.name as string} created`)
      })
    })

  withApiOptions(command.command('list'))
    .description('list sites with their boundaries, device counts and site caches')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { sites } = await client.get('/v1/sites')
        client.close()
        if (options.json === true) return printJson(sites)
        print(table(['SITE', 'DEFINED', 'DEVICES', 'SITE CACHES', 'BOUNDARIES', 'DESCRIPTION'], sites.map((s: any) => [
          s.name, s.defined ? 'yes' : 'no (named by devices)', s.devices, s.siteCaches.length, s.boundaries.join(', ') || '-', s.description
        ])))
      })
    })

  withApiOptions(command.command('rm <name>'))
    .description('delete a site (refused while boundaries name it)')
    .action(async (name: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        await client.delete(`/v1/sites/${encodeURIComponent(name)}`)
        client.close()
        if (options.json !== true) print(`site ${name} deleted`)
      })
    })
  return command
}

export function boundaryCommand (): Command {
  const command = new Command('boundary').description('address ranges that place devices in sites (the first that contains an address wins)')

  withApiOptions(command.command('add <cidr>'))
    .description('add a boundary: devices that declared no site and whose address it contains belong to the site')
    .requiredOption('--site <name>', 'the site (create it first)')
    .option('--description <text>', 'what the range is')
    .addHelpText('after', '\nExample:\n  meshdeploy boundary add 10.20.0.0/16 --site berlin')
    .action(async (cidr: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const created = await client.post('/v1/boundaries', { cidr, site: options.site, ...(options.description !== undefined ? { description: options.description } : {}) })
        client.close()
        if (options.json === true) return printJson(created)
        print(`boundary ${created.id as string}: ${created.cidr as string} → ${created.site as string}`)
      })
    })

  withApiOptions(command.command('list'))
    .description('list boundaries in the order they are checked')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { boundaries } = await client.get('/v1/boundaries')
        client.close()
        if (options.json === true) return printJson(boundaries)
        print(table(['ID', 'CIDR', 'SITE', 'CREATED', 'DESCRIPTION'], boundaries.map((b: any) => [b.id, b.cidr, b.site, b.createdAt, b.description])))
      })
    })

  withApiOptions(command.command('rm <id>'))
    .description('remove a boundary; the devices it placed are placed again')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        await client.delete(`/v1/boundaries/${encodeURIComponent(id)}`)
        client.close()
        if (options.json !== true) print(`boundary ${id} removed`)
      })
    })
  return command
}
