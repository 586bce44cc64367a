import { mkdir, readFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { z } from 'zod'
import { fromHex, generateKeyPair, writeFileAtomic, keyIdOf, keyPairFromSecret, toHex, type Ed25519KeyPair, type FollowedChain, type TlsTrust } from '../protocol/index.js'
import type { CoordinatorClient } from './coordinator-client.js'
import { IdentityCorruptError, NotEnrolledError } from './errors.js'
import { currentArch, currentPlatform } from './platform.js'

const identitySchema = z.object({
  version: z.literal(1),
  deviceId: z.string(),
  credential: z.string(),
  secretKey: z.string().regex(/^[0-9a-f]{64}$/),
  peerId: z.string(),
  coordinatorUrl: z.string(),
  /** Pinned at enrollment, then moved along verified key rotations; manifests must verify against it. */
  coordinatorPublicKey: z.string().regex(/^[0-9a-f]{64}$/),
  /** Key rotations followed to reach the pinned key. */
  coordinatorKeySequence: z.number().int().min(0).optional(),
  /** Keys retired by the rotations followed: manifests signed by them are refused. */
  retiredCoordinatorKeyIds: z.array(z.string()).max(10_000).optional(),
  /** How the coordinator's HTTPS certificate is trusted. */
  tls: z.object({ caPem: z.string().max(1024 * 1024).optional(), pinSha256: z.string().regex(/^[0-9a-f]{64}$/).optional() }).strict().optional(),
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
  coordinatorKeySequence: number
  retiredCoordinatorKeyIds: string[]
  tls: TlsTrust
  site: string
  groups: string[]
}

function fromStored (stored: StoredIdentity): Identity {
  const coordinatorPublicKey = fromHex(stored.coordinatorPublicKey)
  const tls: TlsTrust = {}
  if (stored.tls?.caPem !== undefined) tls.caPem = stored.tls.caPem
  if (stored.tls?.pinSha256 !== undefined) tls.pinSha256 = stored.tls.pinSha256
  return {
    deviceId: stored.deviceId,
    credential: stored.credential,
    key: keyPairFromSecret(fromHex(stored.secretKey)),
    peerId: stored.peerId,
    coordinatorUrl: stored.coordinatorUrl,
    coordinatorPublicKey,
    coordinatorKeyId: keyIdOf(coordinatorPublicKey),
    coordinatorKeySequence: stored.coordinatorKeySequence ?? 0,
    retiredCoordinatorKeyIds: stored.retiredCoordinatorKeyIds ?? [],
    tls,
    site: stored.site,
    groups: stored.groups
  }
}

export function identityPath (dataDir: string): string {
  return join(dataDir, 'agent.json')
}

async function loadStored (dataDir: string): Promise<StoredIdentity | undefined> {
  const path = identityPath(dataDir)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  let decoded: unknown
  try {
    decoded = JSON.parse(text)
  } catch (error) {
    throw new IdentityCorruptError(path, 'it is not JSON', { cause: error })
  }
  const parsed = identitySchema.safeParse(decoded)
  if (!parsed.success) throw new IdentityCorruptError(path, z.prettifyError(parsed.error))
  return parsed.data
}

export async function loadIdentity (dataDir: string): Promise<Identity | undefined> {
  const stored = await loadStored(dataDir)
  return stored === undefined ? undefined : fromStored(stored)
}

/** Replaces agent.json so that a crash leaves the old or the new file whole: temporary file, flush, rename, flush the folder. */
async function saveIdentity (dataDir: string, stored: StoredIdentity): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  await writeFileAtomic(identityPath(dataDir), JSON.stringify(stored, null, 2) + '\n')
}

async function updateIdentity (dataDir: string, change: (stored: StoredIdentity) => void): Promise<void> {
  const stored = await loadStored(dataDir)
  if (stored === undefined) throw new NotEnrolledError()
  change(stored)
  await saveIdentity(dataDir, stored)
}

/**
 * Pins the key a verified rotation chain ends at, durably, before the agent
 * trusts it; from then on the retired keys are refused.
 */
export async function pinCoordinatorKey (dataDir: string, identity: Identity, chain: FollowedChain): Promise<void> {
  const retired = [...new Set([...identity.retiredCoordinatorKeyIds, ...chain.retiredKeyIds])]
  await updateIdentity(dataDir, stored => {
    stored.coordinatorPublicKey = toHex(chain.pinned.publicKey)
    stored.coordinatorKeySequence = chain.pinned.sequence
    stored.retiredCoordinatorKeyIds = retired
  })
  identity.coordinatorPublicKey = chain.pinned.publicKey
  identity.coordinatorKeyId = keyIdOf(chain.pinned.publicKey)
  identity.coordinatorKeySequence = chain.pinned.sequence
  identity.retiredCoordinatorKeyIds = retired
}

/** Stores how the coordinator's certificate is trusted (a new CA or pin given at a later start). */
export async function saveTlsTrust (dataDir: string, identity: Identity, tls: TlsTrust): Promise<void> {
  await updateIdentity(dataDir, stored => { stored.tls = tls })
  identity.tls = tls
}

export interface EnrollInit {
  dataDir: string
  client: CoordinatorClient
  enrollToken?: string
  site?: string
  groups?: string[]
  hostname?: string
  agentVersion: string
  /** How the coordinator's certificate was trusted at enrollment; kept for later starts. */
  tls?: TlsTrust
  signal?: AbortSignal
}

/**
 * Returns the agent's identity, enrolling first when there is none: a new
 * ed25519 device key (its libp2p peer id follows from it), a device
 * credential, and the coordinator's public key, pinned from then on.
 */
export async function loadOrEnroll (init: EnrollInit): Promise<{ identity: Identity, enrolled: boolean, certificate?: unknown }> {
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
    coordinatorKeySequence: answer.coordinatorKeySequence ?? 0,
    retiredCoordinatorKeyIds: [],
    site: answer.site,
    groups: answer.groups,
    enrolledAt: new Date().toISOString()
  }
  if (init.tls !== undefined && (init.tls.caPem !== undefined || init.tls.pinSha256 !== undefined)) stored.tls = init.tls
  await saveIdentity(init.dataDir, stored)
  // The certificate is checked by the caller (and by every peer it is presented to) before it is kept.
  return { identity: fromStored(stored), enrolled: true, ...(answer.certificate !== undefined ? { certificate: answer.certificate } : {}) }
}
