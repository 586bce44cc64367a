import { Command, Option } from 'commander'
import { clientFrom, positiveInteger, print, printJson, run, withApiOptions } from '../context.js'
import { table } from '../format.js'

export function operatorTokenCommand (): Command {
  const command = new Command('token').description('operator tokens and their roles (admin only)')

  withApiOptions(command.command('create'))
    .description('create an operator token; its secret is printed this once')
    .addOption(new Option('--role <role>', 'admin: everything; operator: packages, tasks, devices; viewer: read only').choices(['admin', 'operator', 'viewer']).makeOptionMandatory())
    .requiredOption('--name <name>', 'who or what uses it; shown in the audit log')
    .option('--expires-in-seconds <n>', 'stop working after this long (default: until revoked)', positiveInteger)
    .addHelpText('after', '\nExample:\n  meshdeploy token create --role viewer --name dashboard')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const body: Record<string, unknown> = { role: options.role, name: options.name }
        if (options.expiresInSeconds !== undefined) body.expiresInSeconds = options.expiresInSeconds
        const created = await client.post('/v1/tokens', body)
        client.close()
        if (options.json === true) return printJson(created)
        process.stderr.write(`created ${created.role} token ${created.id} (${created.name}); keep the secret below, it is not shown again\n`)
        print(created.token)
      })
    })

  withApiOptions(command.command('list'))
    .description('list operator tokens (secrets are never shown)')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { tokens } = await client.get('/v1/tokens')
        client.close()
        if (options.json === true) return printJson(tokens)
        print(table(['ID', 'NAME', 'ROLE', 'ACTIVE', 'CREATED', 'BY', 'EXPIRES', 'REVOKED'], tokens.map((t: any) => [
          t.id, t.name, t.role, t.active ? 'yes' : 'no', t.createdAt, t.createdBy, t.expiresAt, t.revokedAt
        ])))
      })
    })

  withApiOptions(command.command('revoke <id>'))
    .description('revoke an operator token: its next request fails')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const revoked = await client.post(`/v1/tokens/${encodeURIComponent(id)}/revoke`)
        client.close()
        if (options.json === true) return printJson(revoked)
        print(`token ${revoked.id} (${revoked.name}) is revoked`)
      })
    })
  return command
}
