import { Command } from 'commander'
import { clientFrom, list, positiveInteger, print, printJson, run, withApiOptions } from '../context.js'
import { table } from '../format.js'

export function enrollmentTokenCommand (): Command {
  const command = new Command('enrollment-token').description('tokens that let devices enroll')

  withApiOptions(command.command('create'))
    .description('create an enrollment token')
    .option('--expires-in-seconds <n>', 'validity (default 7 days)', positiveInteger)
    .option('--max-uses <n>', 'devices that may enroll with it', positiveInteger)
    .option('--site <name>', 'site for devices enrolled with it')
    .option('--groups <names>', 'groups for devices enrolled with it', list)
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const body: Record<string, unknown> = {}
        if (options.expiresInSeconds !== undefined) body.expiresInSeconds = options.expiresInSeconds
        if (options.maxUses !== undefined) body.maxUses = options.maxUses
        if (options.site !== undefined) body.site = options.site
        if (options.groups !== undefined) body.groups = options.groups
        const created = await client.post('/v1/enrollment-tokens', body)
        client.close()
        if (options.json === true) return printJson(created)
        process.stderr.write(`created enrollment token ${created.id}: expires ${created.expiresAt}, ${created.maxUses ?? 'unlimited'} use(s)${created.site !== undefined ? `, site ${created.site}` : ''}${created.groups !== undefined ? `, groups ${created.groups.join(',')}` : ''}\n`)
        print(created.token)
      })
    })

  withApiOptions(command.command('list'))
    .description('list enrollment tokens (secrets are not shown)')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { enrollmentTokens } = await client.get('/v1/enrollment-tokens')
        client.close()
        if (options.json === true) return printJson(enrollmentTokens)
        print(table(['ID', 'ACTIVE', 'CREATED', 'EXPIRES', 'USES', 'MAX', 'SITE', 'GROUPS', 'REVOKED'], enrollmentTokens.map((t: any) => [
          t.id, t.active ? 'yes' : 'no', t.createdAt, t.expiresAt, t.uses, t.maxUses, t.site, t.groups?.join(','), t.revokedAt
        ])))
      })
    })

  withApiOptions(command.command('revoke <id>'))
    .description('revoke an enrollment token: no device enrolls with it any more')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const revoked = await client.post(`/v1/enrollment-tokens/${encodeURIComponent(id)}/revoke`)
        client.close()
        if (options.json === true) return printJson(revoked)
        print(`enrollment token ${revoked.id} is revoked`)
      })
    })
  return command
}
