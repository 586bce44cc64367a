import { Command } from 'commander'
import { clientFrom, print, printJson, run, withApiOptions } from '../context.js'

export function keyCommand (): Command {
  const command = new Command('key').description('the coordinator\'s manifest signing key')

  withApiOptions(command.command('show'))
    .description('show the signing key and its rotation chain')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const keys = await client.get('/v1/keys')
        client.close()
        if (options.json === true) return printJson(keys)
        print(`key id     ${keys.keyId}\npublic key ${keys.publicKey}\nrotations  ${keys.sequence}`)
      })
    })

  withApiOptions(command.command('rotate'))
    .description('rotate the signing key (admin): the old key signs a statement naming the new one; agents follow it and refuse the old key from then on')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const rotated = await client.post('/v1/keys/rotate')
        client.close()
        if (options.json === true) return printJson(rotated)
        print(`rotated the signing key: ${rotated.previousKeyId} → ${rotated.keyId} (rotation ${rotated.sequence})\n` +
          `${rotated.unfinishedTasks} unfinished task(s) now go out re-signed with the new key; agents pin it at their next assignments answer`)
      })
    })
  return command
}
