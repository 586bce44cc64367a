/**
 * Bad input, manifests: a real coordinator, a real agent, and an attacker in
 * the channel between them (a tampering proxy) who rewrites the assignments
 * answer. Each case asserts the agent's named refusal reason, that the
 * refusal is reported to the coordinator, and that nothing changed on the
 * device: nothing installed, nothing cached, the accepted manifest and the
 * pinned key as they were.
 */
import anyTest, { type TestFn } from 'ava'
import {
  MANIFEST_DOMAIN, STATUS_DOMAIN, generateKeyPair, keyIdOf, sealEnvelope, signKeyRotation, toBase64, fromBase64,
  toHex, utf8, type KeyRotation, type Manifest, type SignedEnvelope
} from '../../protocol/index.js'
import type { LocalTask } from '../../agent/state/store.js'
import { waitFor } from '../helpers/processes.js'
import {
  cachedChunks, decodeManifest, filesUnder, openAgentLab, pinnedKey, quiet, replaceAssignment, startLabAgent, type AgentLab, type LabAgent
} from './harness.js'

const test = anyTest as TestFn<{ lab: AgentLab }>

const DAY_MS = 24 * 3600 * 1000
// Fixed for the whole run, so that a rewritten answer is the same on every poll.
const NOW = Date.now()
const ISSUED = new Date(NOW).toISOString()
const attacker = generateKeyPair()
const attackersNextKey = generateKeyPair()

interface CaseContext {
  lab: AgentLab
  agent: LabAgent
  taskId: string
  /** The legitimate manifest of the case's task. */
  legit: SignedEnvelope
  /** Signs bytes as the coordinator would (a recording of something it once signed). */
  signAsCoordinator: (manifest: unknown, domain?: string) => SignedEnvelope
}

interface ManifestCase {
  name: string
  /** The refusal reason the agent must give. */
  reason: string
  /** What the message must say, where the reason alone is shared by several failures. */
  message?: RegExp
  /** The refusal is about the key rotation chain rather than the task. */
  refusedFor?: 'task' | 'key-rotation'
  /** Runs with the channel quiet, before the tampering starts. */
  before?: (context: CaseContext) => Promise<void>
  rewrite: (answer: any, context: CaseContext) => any
}

function withManifest (context: CaseContext, manifest: SignedEnvelope | undefined) {
  return (answer: any) => replaceAssignment(answer, context.taskId, assignment => manifest === undefined ? { taskId: assignment.taskId, revision: assignment.revision } : { ...assignment, manifest })
}

function changed (context: CaseContext, change: (manifest: Manifest) => void): Manifest {
  const manifest = decodeManifest(context.legit)
  change(manifest)
  return manifest
}

function seed (agent: LabAgent, taskId: string, revision: number, manifest: SignedEnvelope): Promise<void> {
  const task: LocalTask = { taskId, revision, manifest, state: 'pending', attempt: 0, failures: 0, seq: 0, bytesFromPeers: 0, bytesFromOrigin: 0, updatedAt: Date.now() }
  return agent.agent.store.putTask(task)
}

/** A rotation statement following the coordinator's current key (or skipping ahead), naming the attacker's next key. */
function nextRotation (c: CaseContext, init: { skip?: number, previousKeyId?: string } = {}): KeyRotation {
  const keyring = c.lab.coordinator.services.keyring
  return {
    type: 'meshdeploy.key-rotation',
    sequence: keyring.sequence + (init.skip ?? 1),
    previousKeyId: init.previousKeyId ?? keyring.current.keyId,
    newPublicKey: toHex(attackersNextKey.publicKey),
    issuedAt: ISSUED
  }
}

function withRotation (answer: any, statement: unknown): any {
  return { ...answer, keyRotations: [...answer.keyRotations, statement] }
}

/** Only the rotation chain, with the extra statement: the refusal is about the chain alone. */
function quietWithRotation (answer: any, statement: unknown): any {
  return { ...withRotation(answer, statement), assignments: [] }
}

const cases: ManifestCase[] = [
  {
    name: 'an assignment without its manifest',
    reason: 'malformed',
    message: /carries no manifest/,
    rewrite: (answer, c) => withManifest(c, undefined)(answer)
  },
  {
    name: 'a manifest signed by a key the agent never pinned',
    reason: 'unknown-key',
    rewrite: (answer, c) => withManifest(c, sealEnvelope(MANIFEST_DOMAIN, fromBase64(c.legit.payload), attacker))(answer)
  },
  {
    name: 'a truncated signature',
    reason: 'malformed',
    message: /signature is 32 bytes/,
    rewrite: (answer, c) => withManifest(c, { ...c.legit, signature: toBase64(fromBase64(c.legit.signature).subarray(0, 32)) })(answer)
  },
  {
    name: 'a duplicated signature',
    reason: 'malformed',
    message: /signature is 128 bytes/,
    rewrite: (answer, c) => withManifest(c, { ...c.legit, signature: toBase64(Buffer.concat([fromBase64(c.legit.signature), fromBase64(c.legit.signature)])) })(answer)
  },
  {
    name: 'a tampered payload (other run arguments) under the original signature',
    reason: 'bad-signature',
    rewrite: (answer, c) => withManifest(c, { ...c.legit, payload: toBase64(utf8(JSON.stringify(changed(c, m => { m.install.runArgs = ['--evil'] })))) })(answer)
  },
  {
    name: 'an expired manifest replayed',
    reason: 'expired',
    rewrite: (answer, c) => withManifest(c, c.signAsCoordinator(changed(c, m => {
      m.issuedAt = new Date(NOW - 10 * DAY_MS).toISOString()
      m.expiresAt = new Date(NOW - 3 * DAY_MS).toISOString()
    })))(answer)
  },
  {
    name: 'a manifest issued in the future',
    reason: 'not-yet-valid',
    rewrite: (answer, c) => withManifest(c, c.signAsCoordinator(changed(c, m => {
      m.issuedAt = new Date(NOW + DAY_MS).toISOString()
      m.expiresAt = new Date(NOW + 3 * DAY_MS).toISOString()
    })))(answer)
  },
  {
    name: 'an older revision replayed after a newer one was accepted (rollback)',
    reason: 'stale-revision',
    before: async c => { await seed(c.agent, c.taskId, 2, c.signAsCoordinator(changed(c, m => { m.revision = 2 }))) },
    rewrite: answer => answer
  },
  {
    name: 'the same revision with other content',
    reason: 'revision-conflict',
    before: async c => { await seed(c.agent, c.taskId, 1, c.legit) },
    rewrite: (answer, c) => withManifest(c, c.signAsCoordinator(changed(c, m => { m.install.runArgs = ['--other'] })))(answer)
  },
  {
    name: 'another task\'s manifest (for another device) relayed under this assignment',
    reason: 'assignment-mismatch',
    before: async c => {
      const other = await c.lab.api.post('/v1/tasks', { packageId: c.lab.packageId, action: 'install', targets: { deviceIds: ['some-other-device'] } })
      ;(c as any).otherManifest = (await c.lab.coordinator.services.tasks.get(other.id)).manifest
    },
    rewrite: (answer, c) => withManifest(c, (c as any).otherManifest)(answer)
  },
  {
    name: 'an assignment that names another revision than its manifest',
    reason: 'assignment-mismatch',
    rewrite: (answer, c) => replaceAssignment(answer, c.taskId, assignment => ({ ...assignment, revision: 7 }))
  },
  {
    name: 'an oversized manifest (17 MiB)',
    reason: 'too-large',
    rewrite: (answer, c) => withManifest(c, sealEnvelope(MANIFEST_DOMAIN, new Uint8Array(17 * 1024 * 1024), c.lab.coordinator.services.keyring.current))(answer)
  },
  {
    name: 'a coordinator signature made for another purpose (a status record domain)',
    reason: 'wrong-domain',
    rewrite: (answer, c) => withManifest(c, c.signAsCoordinator(decodeManifest(c.legit), STATUS_DOMAIN))(answer)
  },
  {
    name: 'a chunk list that does not hash to the package id (mix and match)',
    reason: 'malformed',
    message: /chunk list hashes to/,
    rewrite: (answer, c) => withManifest(c, c.signAsCoordinator(changed(c, m => { m.package.chunks = m.package.chunks.map(() => 'e'.repeat(64)) })))(answer)
  },
  {
    name: 'a signed payload that is not JSON',
    reason: 'malformed',
    message: /not UTF-8 JSON/,
    rewrite: (answer, c) => withManifest(c, sealEnvelope(MANIFEST_DOMAIN, utf8('{"type":"meshdeploy.manifest",'), c.lab.coordinator.services.keyring.current))(answer)
  },
  {
    name: 'a forged key rotation (signed by the attacker) with manifests under the attacker\'s key',
    reason: 'bad-signature',
    refusedFor: 'key-rotation',
    rewrite: (answer, c) => {
      // The statement claims the pinned key as its signer but carries the attacker's signature.
      const forged = { ...signKeyRotation(nextRotation(c, { previousKeyId: keyIdOf(attacker.publicKey) }), attacker), keyId: c.lab.coordinator.services.keyring.current.keyId }
      return withManifest(c, sealEnvelope(MANIFEST_DOMAIN, fromBase64(c.legit.payload), attacker))(withRotation(answer, forged))
    }
  },
  {
    name: 'a key rotation chain with a gap',
    reason: 'key-rotation-refused',
    refusedFor: 'key-rotation',
    rewrite: (answer, c) => quietWithRotation(answer, signKeyRotation(nextRotation(c, { skip: 2 }), c.lab.coordinator.services.keyring.current))
  },
  {
    name: 'a manifest passed off as a key rotation statement',
    reason: 'key-rotation-refused',
    refusedFor: 'key-rotation',
    rewrite: (answer, c) => quietWithRotation(answer, c.legit)
  },
  {
    name: 'a rotation statement signed under the manifest domain',
    reason: 'wrong-domain',
    refusedFor: 'key-rotation',
    rewrite: (answer, c) => quietWithRotation(answer, sealEnvelope(MANIFEST_DOMAIN, utf8(JSON.stringify(nextRotation(c))), c.lab.coordinator.services.keyring.current))
  },
  {
    name: 'a manifest signed by the key a followed rotation retired',
    reason: 'retired-key',
    before: async c => {
      const pinned = new Promise<void>(resolve => { c.agent.agent.once('key-pinned', () => { resolve() }) })
      await c.lab.coordinator.services.keyring.rotate(Date.now())
      // The channel carries the rotation (and nothing else) until the agent has pinned the new key.
      c.lab.proxy.rewrite(answer => ({ ...answer, assignments: [] }))
      await pinned
    },
    // The task record still holds the manifest as first signed, by the key now retired.
    rewrite: (answer, c) => withManifest(c, c.legit)(answer)
  }
]

test.before(async t => {
  t.context.lab = await openAgentLab()
})

test.after.always(async t => {
  await t.context.lab?.close()
})

for (const [index, kase] of cases.entries()) {
  test.serial(`manifest case ${index + 1}: ${kase.name} → ${kase.reason}`, async t => {
    const { lab } = t.context
    const hostname = `manifest-case-${index + 1}`
    const task = await lab.api.post('/v1/tasks', { packageId: lab.packageId, action: 'install', targets: { deviceIds: [hostname] } })
    const legit = (await lab.coordinator.services.tasks.get(task.id)).manifest
    lab.proxy.rewrite(quiet)
    const agent = await startLabAgent(lab, hostname)
    try {
      const context: CaseContext = {
        lab,
        agent,
        taskId: task.id,
        legit,
        signAsCoordinator: (manifest, domain = MANIFEST_DOMAIN) => sealEnvelope(domain, utf8(JSON.stringify(manifest)), lab.coordinator.services.keyring.current)
      }
      await kase.before?.(context)
      const keyBefore = await pinnedKey(agent.dataDir)
      const localBefore = await agent.agent.store.getTask(task.id)
      lab.proxy.rewrite(answer => kase.rewrite(answer, context))

      const refusal = await agent.refusal(kase.refusedFor === 'key-rotation' ? '(key-rotation)' : task.id)
      t.is(refusal.reason, kase.reason, refusal.message)
      if (kase.message !== undefined) t.regex(refusal.message, kase.message)

      if (kase.refusedFor !== 'key-rotation') {
        // The device says why, and the coordinator hears it.
        const row = await waitFor(async () => {
          const current = await lab.coordinator.services.tasks.row(task.id, agent.agent.identity.deviceId)
          return current?.message?.startsWith('manifest refused') === true ? current : undefined
        }, 'the refusal to reach the coordinator', 30_000)
        t.is(row.state, 'failed')
      }
      // Nothing changed on the device.
      t.deepEqual(await filesUnder(agent.installRoot), [], 'nothing installed')
      t.deepEqual(await cachedChunks(agent.dataDir), [], 'nothing cached')
      t.is(await pinnedKey(agent.dataDir), keyBefore, 'the pinned key is unchanged')
      const localAfter = await agent.agent.store.getTask(task.id)
      // A refusal leaves a placeholder to number its report under; only a stored manifest is an accepted revision.
      const accepted = (task?: LocalTask): number => task?.manifest !== undefined ? task.revision : 0
      t.is(accepted(localAfter), accepted(localBefore), 'the accepted revision is unchanged')
      t.deepEqual(localAfter?.manifest, localBefore?.manifest, 'the accepted manifest is unchanged')
      t.false(['downloading', 'verifying', 'installing', 'succeeded'].includes(localAfter?.state ?? 'pending'), 'no attempt started')
    } finally {
      await agent.stop()
    }
  })
}

test.serial('control: the untampered channel deploys (the cases above fail for their reason, not the harness)', async t => {
  const { lab } = t.context
  const hostname = 'manifest-control'
  const task = await lab.api.post('/v1/tasks', { packageId: lab.packageId, action: 'install', targets: { deviceIds: [hostname] } })
  lab.proxy.rewrite(answer => answer)
  const agent = await startLabAgent(lab, hostname)
  try {
    const row = await waitFor(async () => {
      const current = await lab.coordinator.services.tasks.row(task.id, agent.agent.identity.deviceId)
      return current?.state === 'succeeded' ? current : undefined
    }, 'the control task to succeed', 60_000)
    t.is(row.exitCode, 0)
    t.deepEqual(await filesUnder(agent.installRoot), ['installed'])
  } finally {
    await agent.stop()
  }
})
