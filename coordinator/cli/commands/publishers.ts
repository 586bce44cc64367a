import { Command } from 'commander'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { z } from 'zod'
import { fromHex, generateKeyPair, keyIdOf, keyPairFromSecret, toHex, type Ed25519KeyPair } from '../../../protocol/index.js'
import { clientFrom, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { table } from '../format.js'

const keyFileSchema = z.object({
  type: z.literal('meshdeploy.publisher-key'),
  name: z.string().optional(),
  secretKey: z.string().regex(/^[0-9a-f]{64}$/),
  publicKey: z.string().regex(/^[0-9a-f]{64}$/)
})

/** Reads a publisher key file written by `meshdeploy publisher keygen`. */
export async function readPublisherKey (file: string): Promise<Ed25519KeyPair> {
  let parsed
  try {
    parsed = keyFileSchema.safeParse(JSON.parse(await readFile(file, 'utf8')))
  } catch (error) {
    throw new UsageError(`cannot read the publisher key ${file}: ${(error as Error).message}`)
  }
  if (!parsed.success) throw new UsageError(`${file} is not a publisher key made by meshdeploy publisher keygen`)
  const pair = keyPairFromSecret(fromHex(parsed.data.secretKey))
  if (toHex(pair.publicKey) !== parsed.data.publicKey) throw new UsageError(`${file}: the public key does not belong to the secret key`)
  return pair
}

async function publicKeyOf (options: { publicKey?: string, key?: string }): Promise<string> {
  if (options.publicKey !== undefined) return options.publicKey
  if (options.key === undefined) throw new UsageError('give --public-key HEX or --key FILE')
  const text = await readFile(options.key, 'utf8')
  try {
    return (JSON.parse(text) as { publicKey: string }).publicKey
  } catch {
    return text.trim()
  }
}

export function publisherCommand (): Command {
  const publisher = new Command('publisher').description('publisher keys for security verification of uploads')

  publisher.command('keygen')
    .description('make a publisher key pair (keep the file secret: it signs packages)')
    .requiredOption('--out <file>', 'key file to write (mode 0600)')
    .option('--name <name>', 'publisher name to note in the file')
    .action(async options => {
      await run(async () => {
        const pair = generateKeyPair()
        await writeFile(options.out, JSON.stringify({ type: 'meshdeploy.publisher-key', ...(options.name !== undefined ? { name: options.name } : {}), secretKey: toHex(pair.secretKey), publicKey: toHex(pair.publicKey) }, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
        await chmod(options.out, 0o600)
        print(`wrote ${options.out}\n  public key ${toHex(pair.publicKey)}\n  key id     ${keyIdOf(pair.publicKey)}\nregister it: meshdeploy publisher add NAME --key ${options.out}`)
      })
    })

  withApiOptions(publisher.command('add <name>'))
    .description('register a publisher key: uploads signed with it verify')
    .option('--public-key <hex>', 'the ed25519 public key, hex')
    .option('--key <file>', 'or read it from a key file (only the public half is sent)')
    .action(async (name: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const record = await client.post('/v1/publishers', { name, publicKey: await publicKeyOf(options) })
        client.close()
        if (options.json === true) return printJson(record)
        print(`registered ${record.name}, key id ${record.keyId}`)
      })
    })

  withApiOptions(publisher.command('list'))
    .description('list the registered publisher keys')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const { publishers } = await client.get('/v1/publishers')
        client.close()
        if (options.json === true) return printJson(publishers)
        print(table(['KEY ID', 'NAME', 'PUBLIC KEY', 'ADDED', 'BY'], publishers.map((p: any) => [p.keyId, p.name, p.publicKey, p.addedAt, p.addedBy])))
      })
    })

  withApiOptions(publisher.command('rm <keyId>'))
    .description('remove a publisher key')
    .action(async (keyId: string, options) => {
      await run(async () => {
        const client = clientFrom(options)
        const record = await client.delete(`/v1/publishers/${keyId}`)
        client.close()
        if (options.json === true) return printJson(record)
        print(`removed ${record.name} (${record.keyId})`)
      })
    })
  return publisher
}
