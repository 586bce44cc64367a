import { Command } from 'commander'
import { readFile } from 'node:fs/promises'
import { parseUsersCsv } from '../../directory/csv.js'
import { clientFrom, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { table } from '../format.js'

export function userCommand (): Command {
  const user = new Command('user').description('the people who use devices: department, role, devices (for targeting)')

  withApiOptions(user.command('import <file>'))
    .description('import people from a CSV file: id,name,email,department,role,devices (devices separated by ;)')
    .option('--replace', 'remove the people the file does not list')
    .addHelpText('after', '\nExample file:\n  id,name,email,department,role,devices\n  alice,Alice Martin,alice@example.org,Sales/EMEA,manager,pc-0042;laptop-alice\n  bob,Bob Stone,bob@example.org,Engineering,developer,pc-0107\n\n  meshdeploy user import ./staff.csv --replace')
    .action(async (file: string, options) => {
      await run(async () => {
        let users
        try {
          users = parseUsersCsv(await readFile(file, 'utf8'))
        } catch (error) {
          throw new UsageError(`${file}: ${(error as Error).message}`)
        }
        const client = clientFrom(options)
        const result = await client.post('/v1/users/import', { users, ...(options.replace === true ? { replace: true } : {}) })
        client.close()
        if (options.json === true) return printJson(result)
        print(`imported ${users.length} people: ${result.created} new, ${result.updated} changed, ${result.unchanged} unchanged, ${result.removed} removed; ${result.total} in the directory`)
      })
    })

  withApiOptions(user.command('list'))
    .description('list people')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { users } = await client.get('/v1/users')
        client.close()
        if (options.json === true) return printJson(users)
        print(table(['ID', 'NAME', 'DEPARTMENT', 'ROLE', 'DEVICES'], users.map((u: any) => [u.id, u.displayName, u.department, u.role, u.devices.join(',') || '-'])))
      })
    })

  withApiOptions(user.command('show <id>'))
    .description('show a person: department, role and devices')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const person = await client.get(`/v1/users/${encodeURIComponent(id)}`)
        client.close()
        if (options.json === true) return printJson(person)
        print(Object.entries(person).map(([key, value]) => `${key.padEnd(12)} ${Array.isArray(value) ? value.join(', ') : String(value)}`).join('\n'))
      })
    })

  withApiOptions(user.command('rm <id>'))
    .description('remove a person')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const removed = await client.delete(`/v1/users/${encodeURIComponent(id)}`)
        client.close()
        if (options.json === true) return printJson(removed)
        print(`removed ${removed.id}`)
      })
    })
  return user
}
