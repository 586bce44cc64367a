/**
 * Property-based fuzzing of the decoders that see untrusted bytes first:
 * whatever they are given, they either return what was really signed or
 * throw one of the named errors — never another exception, never a
 * document that was not signed as it is.
 */
import { isDeepStrictEqual } from 'node:util'
import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'
import {
  MANIFEST_DOMAIN, MANIFEST_VERSION, MeshdeployError, followKeyRotations, fromBase64, generateKeyPair, keyIdOf, openEnvelope, openManifest, packageIdOf,
  sealEnvelope, signKeyRotation, signManifest, toBase64, toHex, trustKeys, utf8, validateManifest, type Manifest
} from '../../protocol/index.js'

const DOMAIN = 'meshdeploy/fuzz/v1'
const key = generateKeyPair()
const other = generateKeyPair()
const envelopeOptions = { domain: DOMAIN, keys: trustKeys(key.publicKey), maxPayloadBytes: 4096 }
const NOW = Date.parse('2026-11-21T12:00:00Z')
const RUNS = 400

/** Runs a property; a counterexample fails the test with fast-check's report. */
function check<T> (t: ExecutionContext, property: fc.IProperty<T>, parameters?: fc.Parameters<T>): void {
  t.notThrows(() => { fc.assert(property, parameters) })
}

/** Runs `decode` and reports anything but a named error as a failure. */
function onlyNamedErrors<T> (decode: () => T): T | MeshdeployError {
  try {
    return decode()
  } catch (error) {
    if (error instanceof MeshdeployError) return error
    throw new Error(`not a named error: ${String((error as Error)?.name)}: ${String((error as Error)?.message)}`)
  }
}

const envelopeLike = fc.record({
  payloadType: fc.oneof(fc.constant(DOMAIN), fc.string()),
  keyId: fc.oneof(fc.constant(keyIdOf(key.publicKey)), fc.stringMatching(/^[0-9a-f]{32}$/), fc.string()),
  payload: fc.oneof(fc.base64String({ maxLength: 200 }), fc.string()),
  signature: fc.oneof(fc.base64String({ maxLength: 120 }), fc.uint8Array({ minLength: 64, maxLength: 64 }).map(toBase64), fc.string())
}, { requiredKeys: [] })

test('the envelope decoder throws only named errors on arbitrary input', t => {
  check(t, fc.property(fc.oneof(fc.anything(), envelopeLike, fc.string(), fc.uint8Array({ maxLength: 2000 }), fc.json()), input => {
    const result = onlyNamedErrors(() => openEnvelope(input, envelopeOptions))
    // Nothing random opens: it would need a signature by the trusted key.
    return result instanceof MeshdeployError
  }), { numRuns: RUNS * 2 })
})

type Mutation = (envelope: Record<string, string>) => Record<string, unknown>

const mutations: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, bit]): Mutation => envelope => {
    const payload = Buffer.from(fromBase64(envelope.payload))
    if (payload.byteLength > 0) payload[at % payload.byteLength] ^= bit
    else return { ...envelope, payload: toBase64(Buffer.from([bit])) }
    return { ...envelope, payload: toBase64(payload) }
  }),
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, bit]): Mutation => envelope => {
    const signature = Buffer.from(fromBase64(envelope.signature))
    signature[at % signature.byteLength] ^= bit
    return { ...envelope, signature: toBase64(signature) }
  }),
  fc.integer({ min: 0, max: 63 }).map((length): Mutation => envelope => ({ ...envelope, signature: toBase64(fromBase64(envelope.signature).subarray(0, length)) })),
  fc.constant<Mutation>(envelope => ({ ...envelope, signature: toBase64(Buffer.concat([fromBase64(envelope.signature), fromBase64(envelope.signature)])) })),
  fc.string({ maxLength: 40 }).filter(type => type !== DOMAIN).map((type): Mutation => envelope => ({ ...envelope, payloadType: type })),
  fc.constant<Mutation>(envelope => ({ ...envelope, keyId: keyIdOf(other.publicKey) })),
  fc.constant<Mutation>(envelope => sealEnvelope(DOMAIN, fromBase64(envelope.payload), other) as unknown as Record<string, unknown>),
  fc.constant<Mutation>(envelope => ({ ...sealEnvelope(DOMAIN, fromBase64(envelope.payload), other), keyId: envelope.keyId })),
  fc.string({ maxLength: 10 }).map((extra): Mutation => envelope => ({ ...envelope, [`x${extra}`]: 'surprise' })),
  fc.constantFrom('payloadType', 'keyId', 'payload', 'signature').map((field): Mutation => envelope => {
    const { [field]: removed, ...rest } = envelope
    void removed
    return rest
  }),
  fc.constant<Mutation>(envelope => ({ ...envelope, payload: envelope.payload + '!' }))
)

test('every mutation of a signed envelope is refused with a named error', t => {
  check(t, fc.property(fc.uint8Array({ maxLength: 512 }), mutations, (payload, mutate) => {
    const sealed = sealEnvelope(DOMAIN, payload, key) as unknown as Record<string, string>
    const result = onlyNamedErrors(() => openEnvelope(mutate(sealed), envelopeOptions))
    return result instanceof MeshdeployError
  }), { numRuns: RUNS * 2 })
})

test('an untouched envelope always opens to its exact bytes, as an object or as serialized JSON', t => {
  check(t, fc.property(fc.uint8Array({ maxLength: 4096 }), fc.boolean(), (payload, serialized) => {
    const sealed = sealEnvelope(DOMAIN, payload, key)
    const opened = openEnvelope(serialized ? JSON.stringify(sealed) : sealed, envelopeOptions)
    return Buffer.from(opened.payload).equals(Buffer.from(payload))
  }), { numRuns: RUNS })
})

const sha = fc.stringMatching(/^[0-9a-f]{64}$/)

/** Valid manifests: sizes, chunk lists and ids consistent with each other. */
const manifests: fc.Arbitrary<Manifest> = fc.record({
  chunkSizeBytes: fc.constantFrom(65536, 1048576),
  chunkCount: fc.integer({ min: 0, max: 6 }),
  tail: fc.integer({ min: 1, max: 65536 }),
  chunks: fc.array(sha, { minLength: 6, maxLength: 6 }),
  sha256: sha,
  taskId: fc.stringMatching(/^task-[0-9a-f]{16}$/),
  revision: fc.integer({ min: 1, max: 1000 }),
  runArgs: fc.array(fc.string({ maxLength: 30 }), { maxLength: 5 }),
  name: fc.string({ minLength: 1, maxLength: 50 })
}).map(({ chunkSizeBytes, chunkCount, tail, chunks, sha256, taskId, revision, runArgs, name }) => {
  const sizeBytes = chunkCount === 0 ? 0 : (chunkCount - 1) * chunkSizeBytes + tail
  const list = { sizeBytes, chunkSizeBytes, sha256, chunks: chunks.slice(0, chunkCount) }
  return {
    type: 'meshdeploy.manifest',
    version: MANIFEST_VERSION,
    taskId,
    revision,
    rerun: 0,
    issuedAt: new Date(NOW - 1000).toISOString(),
    expiresAt: new Date(NOW + 3600_000).toISOString(),
    action: 'install',
    package: { id: packageIdOf(list), name, version: '1', platform: 'linux', arch: 'any', kind: 'shell', fileName: 'tool.sh', ...list },
    install: { runArgs, timeoutSeconds: 60 },
    reboot: { policy: 'never' },
    conditions: { deferWhileVpn: false },
    limits: { maxAttempts: 3, retryDelaySeconds: 60 }
  } satisfies Manifest
})

test('the manifest validator accepts what it should and throws only named errors on anything else', t => {
  check(t, fc.property(manifests, manifest => {
    return isDeepStrictEqual(validateManifest(manifest), manifest)
  }), { numRuns: RUNS })
  check(t, fc.property(fc.oneof(fc.anything(), fc.json().map(text => JSON.parse(text) as unknown)), input => {
    return onlyNamedErrors(() => validateManifest(input)) instanceof MeshdeployError
  }), { numRuns: RUNS })
})

/** Sets one field anywhere in a document to an arbitrary value. */
function setPath (document: unknown, path: number[], value: unknown): unknown {
  const copy = structuredClone(document) as Record<string, unknown>
  let node: any = copy
  for (const [depth, step] of path.entries()) {
    if (node === null || typeof node !== 'object') return copy
    const keys = Object.keys(node)
    if (keys.length === 0) return copy
    const field = keys[step % keys.length]
    if (depth === path.length - 1 || node[field] === null || typeof node[field] !== 'object') {
      node[field] = value
      return copy
    }
    node = node[field]
  }
  return copy
}

test('a manifest with any one field changed is refused, or still satisfies every invariant', t => {
  check(t, fc.property(manifests, fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), fc.anything(), (manifest, path, value) => {
    const result = onlyNamedErrors(() => validateManifest(setPath(manifest, path, value)))
    if (result instanceof MeshdeployError) return true
    const accepted = result
    return accepted.package.id === packageIdOf(accepted.package) &&
      accepted.package.chunks.length === Math.ceil(accepted.package.sizeBytes / accepted.package.chunkSizeBytes)
  }), { numRuns: RUNS * 2 })
})

test('a signed manifest opens only under its key, its domain and its validity window', t => {
  check(t, fc.property(manifests, fc.integer({ min: -30 * 86_400_000, max: 30 * 86_400_000 }), fc.boolean(), (manifest, clockOffsetMs, rightKey) => {
    const envelope = signManifest(manifest, rightKey ? key : other)
    const result = onlyNamedErrors(() => openManifest(envelope, { keys: trustKeys(key.publicKey), now: NOW + clockOffsetMs }))
    const inWindow = NOW + clockOffsetMs <= Date.parse(manifest.expiresAt) + 300_000 && NOW + clockOffsetMs >= Date.parse(manifest.issuedAt) - 300_000
    if (!rightKey || !inWindow) return result instanceof MeshdeployError
    return !(result instanceof MeshdeployError) && result.manifest.taskId === manifest.taskId
  }), { numRuns: RUNS })
  check(t, fc.property(fc.oneof(fc.anything(), envelopeLike.map(envelope => ({ ...envelope, payloadType: MANIFEST_DOMAIN }))), input => {
    return onlyNamedErrors(() => openManifest(input, { keys: trustKeys(key.publicKey), now: NOW })) instanceof MeshdeployError
  }), { numRuns: RUNS })
})

test('the key rotation follower applies only a chain signed link by link, and throws only named errors', t => {
  const keys = [key, generateKeyPair(), generateKeyPair(), generateKeyPair()]
  const chain = keys.slice(1).map((next, index) => signKeyRotation({
    type: 'meshdeploy.key-rotation', sequence: index + 1, previousKeyId: keyIdOf(keys[index].publicKey), newPublicKey: toHex(next.publicKey), issuedAt: new Date(NOW).toISOString()
  }, keys[index]))
  t.is(keyIdOf(followKeyRotations({ publicKey: key.publicKey, sequence: 0 }, chain).pinned.publicKey), keyIdOf(keys[3].publicKey))
  check(t, fc.property(fc.array(fc.oneof(fc.constantFrom(...chain), fc.anything(), envelopeLike), { maxLength: 6 }), fc.integer({ min: 0, max: 3 }), (statements, start) => {
    const result = onlyNamedErrors(() => followKeyRotations({ publicKey: keys[start].publicKey, sequence: start }, statements))
    if (result instanceof MeshdeployError) return true
    // Whatever was applied is exactly the genuine chain from the pinned key on.
    const reached = result.pinned.sequence
    return reached >= start && keyIdOf(result.pinned.publicKey) === keyIdOf(keys[reached].publicKey)
  }), { numRuns: RUNS })
})

test('the envelope decoder refuses oversized input before decoding it', t => {
  const huge = utf8(JSON.stringify({ ...sealEnvelope(DOMAIN, new Uint8Array(10), key), payload: 'A'.repeat(100_000) }))
  const error = t.throws(() => openEnvelope(huge, envelopeOptions))
  t.is(error?.name, 'TooLargeError')
})
