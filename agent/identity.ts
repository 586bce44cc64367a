import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { z } from 'zod'
import { fromHex, generateKeyPair, keyIdOf, keyPairFromSecret, toHex, type Ed25519KeyPair } from '../protocol/index.js'
import type { CoordinatorClient } from './coordinator-client.js'
import { NotEnrolledError } from './errors.js'
import { currentArch, currentPlatform } from './platform.js'

const identitySchema = z.object({
  version: z.literal(1),
  deviceId: z.string(),
  credential: z.string(),
  secretKey: z.string().regex(/^[0-9a-f]{64}$/),
  peerId: z.string(),
  coordinatorUrl: z.string(),
  /** Pinned at enrollment; manifests must verify against it. */
  coordinatorPublicKey: z.string().regex(/^[0-9a-f]{64}$/),
  site: z.string(),
  groups: z.array(z.string()),
  enrolledAt: z.string()
})

type StoredIdentity = z.infer<typeof identitySchema>

export interface Identity {
  deviceId: string
  credential: string
  key: Ed25519KeyPair
  peerId: string
  coordinatorUrl: string
  coordinatorPublicKey: Uint8Array
  coordinatorKeyId: string
  site: string
  groups: string[]
}

function fromStored (stored: StoredIdentity): Identity {
  const coordinatorPublicKey = fromHex(stored.coordinatorPublicKey)
  return {
    deviceId: stored.deviceId,
    credential: stored.credential,
    key: keyPairFromSecret(fromHex(stored.secretKey)),
    peerId: stored.peerId,
    coordinatorUrl: stored.coordinatorUrl,
    coordinatorPublicKey,
    coordinatorKeyId: keyIdOf(coordinatorPublicKey),
    site: stored.site,
    groups: stored.groups
  }
}

export function identityPath (dataDir: string): string {
  return join(dataDir, 'agent.json')
}

export async function loadIdentity (dataDir: string): Promise<Identity | undefined> {
  let text: string
  try {
    text = await readFile(identityPath(dataDir), 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  return fromStored(identitySchema.parse(JSON.parse(text)))
}

async function saveIdentity (dataDir: string, stored: StoredIdentity): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const path = identityPath(dataDir)
  const temporary = `${path}.tmp`
  await writeFile(temporary, JSON.stringify(stored, null, 2) + '\n', { mode: 0o600 })
  await chmod(temporary, 0o600)
  await rename(temporary, path)
}

export interface EnrollInit {
  dataDir: string
  client: CoordinatorClient
  enrollToken?: string
  site?: string
  groups?: string[]
  hostname?: string
  agentVersion: string
  signal?: AbortSignal
}

/**
 * Returns the agent's identity, enrolling first when there is none: a new
 * ed25519 device key (its libp2p peer id follows from it), a device
 * credential, and the coordinator's public key, pinned from then on.
 */
export async function loadOrEnroll (init: EnrollInit): Promise<{ identity: Identity, enrolled: boolean }> {
  const existing = await loadIdentity(init.dataDir)
  if (existing !== undefined) return { identity: existing, enrolled: false }
  if (init.enrollToken === undefined) throw new NotEnrolledError()
  const key = generateKeyPair()
  const request: Parameters<CoordinatorClient['enroll']>[0] = {
    token: init.enrollToken,
    publicKey: toHex(key.publicKey),
    hostname: init.hostname ?? hostname(),
    platform: currentPlatform(),
    arch: currentArch(),
    agentVersion: init.agentVersion
  }
  if (init.site !== undefined) request.site = init.site
  if (init.groups !== undefined && init.groups.length > 0) request.groups = init.groups
  const answer = await init.client.enroll(request, init.signal !== undefined ? { signal: init.signal } : {})
  const stored: StoredIdentity = {
    version: 1,
    deviceId: answer.deviceId,
    credential: answer.credential,
    secretKey: toHex(key.secretKey),
    peerId: answer.peerId,
    coordinatorUrl: init.client.baseUrl.toString(),
    coordinatorPublicKey: answer.coordinatorPublicKey,
    site: answer.site,
    groups: answer.groups,
    enrolledAt: new Date().toISOString()
  }
  await saveIdentity(init.dataDir, stored)
  return { identity: fromStored(stored), enrolled: true }
}
