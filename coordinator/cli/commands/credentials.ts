import { Command } from 'commander'
import { readFile } from 'node:fs/promises'
import { clientFrom, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { table } from '../format.js'

/** A secret from a file, or from standard input for `-`; one trailing line break is not part of it. */
export async function readSecretFile (file: string, what: string): Promise<string> {
  let text: string
  try {
    if (file === '-') {
      const parts: Buffer[] = []
      for await (const part of process.stdin) parts.push(part as Buffer)
      text = Buffer.concat(parts).toString('utf8')
    } else {
      text = await readFile(file, 'utf8')
    }
  } catch (error) {
    throw new UsageError(`cannot read the ${what} from ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }
  const secret = text.replace(/\r?\n$/, '')
  if (secret === '') throw new UsageError(`${file} holds no ${what}`)
  return secret
}

export function credentialCommand (): Command {
  const credential = new Command('credential').description('accounts and SSH keys that push installs log in with (their secrets never come back out)')

  withApiOptions(credential.command('add'))
    .description('add an SSH private key (OpenSSH, PEM, PKCS#8 or PuTTY) or an account with a password')
    .requiredOption('--name <name>', 'a unique name, used to pick it for push installs')
    .requiredOption('--user <user>', 'the user it logs in as')
    .option('--ssh-key <file>', 'private key file (ssh-keygen\'s default OpenSSH format works; PEM too)')
    .option('--passphrase-file <file>', 'file holding the key\'s passphrase (- reads standard input)')
    .option('--password-file <file>', 'file holding the account\'s password (- reads standard input); never give a password on the command line')
    .addHelpText('after', `
The secret is sent once, sealed at rest with a key in the coordinator's data folder, and never shown
again: lists show the name, type, user and (for keys) the public key's fingerprint.
An account that is not root needs sudo rights on the hosts; its password is given to sudo on
standard input.

Examples:
  meshdeploy credential add --name deploy-key --user deploy --ssh-key ~/.ssh/id_ed25519 --passphrase-file ./passphrase
  meshdeploy credential add --name branch-admin --user admin --password-file - < ./password`)
    .action(async options => {
      await run(async () => {
        if ((options.sshKey === undefined) === (options.passwordFile === undefined)) throw new UsageError('give either --ssh-key FILE or --password-file FILE')
        if (options.passphraseFile !== undefined && options.sshKey === undefined) throw new UsageError('--passphrase-file goes with --ssh-key')
        const body = options.sshKey !== undefined
          ? {
              type: 'ssh-key',
              name: options.name,
              user: options.user,
              privateKey: await readSecretFile(options.sshKey, 'private key'),
              ...(options.passphraseFile !== undefined ? { passphrase: await readSecretFile(options.passphraseFile, 'passphrase') } : {})
            }
          : { type: 'account', name: options.name, user: options.user, password: await readSecretFile(options.passwordFile, 'password') }
        const client = clientFrom(options)
        const record = await client.post('/v1/credentials', body)
        client.close()
        if (options.json === true) return printJson(record)
        print(`added ${record.name as string} (${record.id as string}): ${record.type as string} for ${record.user as string}${record.fingerprint !== undefined ? `, ${record.keyType as string} ${record.fingerprint as string}` : ''}`)
      })
    })

  withApiOptions(credential.command('list'))
    .description('list the credentials (never their secrets)')
    .addHelpText('after', '\nExample:\n  meshdeploy credential list')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const rows: any[] = []
        let cursor: string | undefined
        do {
          const page = await client.get(`/v1/credentials?limit=1000${cursor !== undefined ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
          rows.push(...page.credentials)
          cursor = page.nextCursor
        } while (cursor !== undefined)
        client.close()
        if (options.json === true) return printJson(rows)
        print(table(['ID', 'NAME', 'TYPE', 'USER', 'FINGERPRINT', 'ADDED', 'BY'], rows.map(row => [row.id, row.name, row.type, row.user, row.fingerprint ?? '-', row.createdAt, row.createdBy])))
      })
    })

  withApiOptions(credential.command('rm <id>'))
    .description('remove a credential and its secret')
    .addHelpText('after', '\nExample:\n  meshdeploy credential rm cred-0mabc1234-0a1b2c3d')
    .action(async (id: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const record = await client.delete(`/v1/credentials/${encodeURIComponent(id)}`)
        client.close()
        if (options.json === true) return printJson(record)
        print(`removed ${record.name as string} (${record.id as string})`)
      })
    })
  return credential
}
