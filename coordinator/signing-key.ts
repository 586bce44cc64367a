import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, keyIdOf, keyPairFromSecret, fromHex, toHex, trustKeys, type KeyResolver, type SigningKey } from '../protocol/index.js'

export interface CoordinatorKey extends SigningKey {
  keyId: string
  publicKeyHex: string
}

/**
 * Loads the coordinator's ed25519 signing key, or makes one at first start.
 * The file is readable by its owner only.
 */
export async function loadOrCreateSigningKey (path: string): Promise<{ key: CoordinatorKey, created: boolean }> {
  let secretKey: Uint8Array
  let created = false
  try {
    const stored = JSON.parse(await readFile(path, 'utf8')) as { secretKey: string }
    secretKey = fromHex(stored.secretKey)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    const pair = generateKeyPair()
    secretKey = pair.secretKey
    await mkdir(dirname(path), { recursive: true, mode: 0o700 })
    await writeFile(path, JSON.stringify({ secretKey: toHex(pair.secretKey), publicKey: toHex(pair.publicKey), createdAt: new Date().toISOString() }, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
    created = true
  }
  await chmod(path, 0o600)
  const pair = keyPairFromSecret(secretKey)
  return { key: { ...pair, keyId: keyIdOf(pair.publicKey), publicKeyHex: toHex(pair.publicKey) }, created }
}

export function resolverFor (key: CoordinatorKey): KeyResolver {
  return trustKeys(key.publicKey)
}
