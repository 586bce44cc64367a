/**
 * Bad input, chunks: a real agent downloads a package while a malicious peer
 * (test/helpers/malicious-peer.ts) claims to hold all of it and answers every
 * piece request wrongly. Each case asserts the agent's named refusal, that
 * the honest download still completes from the origin, and that nothing
 * changed for the worse: no byte from the peer counted as progress in any
 * status record, no chunk in the cache that does not hash to its name.
 */
import { createHash } from 'node:crypto'
import anyTest, { type ExecutionContext, type TestFn } from 'ava'
import { behaviours, type Behaviour } from '../helpers/malicious-peer.js'
import { waitFor } from '../helpers/processes.js'
import type { Refusal } from '../../agent/refusals.js'
import { openMeshLab, type LabPackage, type MeshLab } from './mesh-lab.js'

const test = anyTest as TestFn<{ lab: MeshLab, good: Set<string> }>

test.before(async t => {
  t.context.lab = await openMeshLab()
  t.context.good = new Set()
})

test.after.always(async t => {
  await t.context.lab?.close()
})

interface ChunkCase {
  name: string
  behaviour: Behaviour
  /** The agent's refusal reason. */
  reason: 'hash-mismatch' | 'malformed-answer' | 'stalled'
  /** What the refusal's message names. */
  message: RegExp
  /** The agent hangs up on the peer (a second offence bans it: chunk case 11). */
  disconnected: boolean
}

const cases: ChunkCase[] = [
  { name: 'a chunk with a wrong hash', behaviour: behaviours.wrongHash, reason: 'hash-mismatch', message: /fails its hash/, disconnected: true },
  { name: 'a truncated chunk (the stream closes halfway)', behaviour: behaviours.truncated, reason: 'malformed-answer', message: /MalformedPieceMessageError: the peer closed the stream after \d+ of \d+ bytes/, disconnected: true },
  { name: 'a chunk longer than its header declares', behaviour: behaviours.longer, reason: 'malformed-answer', message: /MalformedPieceMessageError: the peer sent more than the \d+ bytes it announced/, disconnected: true },
  { name: 'a header declaring more than was asked for', behaviour: behaviours.announcesMore, reason: 'malformed-answer', message: /MalformedPieceMessageError: asked for \d+ bytes, the peer announced \d+/, disconnected: true },
  { name: 'a valid chunk of the package, for another index', behaviour: behaviours.otherIndex, reason: 'hash-mismatch', message: /fails its hash/, disconnected: true },
  { name: 'a peer dribbling bytes slowly', behaviour: behaviours.dribble, reason: 'stalled', message: /fewer than 8192 bytes from the peer in 1000 ms; the chunk is asked elsewhere/, disconnected: false },
  { name: 'a data frame whose length prefix claims 4 GiB', behaviour: behaviours.gigabytePrefix, reason: 'malformed-answer', message: /FrameTooLargeError: a frame of 4294967296 bytes exceeds the limit/, disconnected: true },
  { name: 'a header frame whose length prefix claims 2 GiB', behaviour: behaviours.gigabyteHeader, reason: 'malformed-answer', message: /FrameTooLargeError: a frame of 2147483648 bytes exceeds the limit/, disconnected: true },
  { name: 'a length prefix that never ends', behaviour: behaviours.endlessPrefix, reason: 'malformed-answer', message: /FrameTooLargeError/, disconnected: true },
  { name: 'an answer status no protocol version has', behaviour: behaviours.unknownStatus, reason: 'malformed-answer', message: /MalformedPieceMessageError: unknown answer status 238/, disconnected: true }
]

/** The honest outcome and the untouched state every case must end with. */
/** A package whose chunks count as good in the cache checks of every later case. */
async function newPackage (t: ExecutionContext<{ lab: MeshLab, good: Set<string> }>, chunkCount: number): Promise<LabPackage> {
  const pkg = await t.context.lab.newPackage(chunkCount)
  for (const chunk of pkg.chunks) t.context.good.add(createHash('sha256').update(chunk).digest('hex'))
  return pkg
}

async function assertNothingChanged (t: ExecutionContext<{ lab: MeshLab, good: Set<string> }>, pkg: LabPackage, deployed: Awaited<ReturnType<MeshLab['deploy']>>): Promise<void> {
  const { good } = t.context
  t.is(deployed.row.state, 'succeeded', deployed.row.message)
  t.is(deployed.row.bytesFromPeers, 0, 'no byte from the malicious peer counted')
  t.is(deployed.row.bytesFromOrigin, pkg.sizeBytes, 'everything came from the origin')
  t.true(deployed.history.length > 2)
  t.deepEqual(deployed.history.filter(record => record.bytesFromPeers > 0 || record.bytesDone > pkg.sizeBytes), [], 'no status record claimed progress from bad bytes')
  const cached = await t.context.lab.verifiedCache()
  t.deepEqual(cached.filter(sha256 => !good.has(sha256)), [], 'only chunks that hash to their names, of packages deployed')
}

for (const [index, kase] of cases.entries()) {
  test.serial(`chunk case ${index + 1}: ${kase.name} → ${kase.reason}${kase.disconnected ? ', peer disconnected' : ''}; the download completes from the origin`, async t => {
    const { lab } = t.context
    const pkg = await newPackage(t, 8)
    const peer = await lab.startPeer({ pkg: { id: pkg.id, chunks: pkg.chunks }, behaviour: kase.behaviour })
    try {
      await lab.connect(peer)
      const from = lab.refusals.length
      const deployed = await lab.deploy(pkg)
      t.true(peer.requests.length > 0, 'the agent did ask the peer')
      const refusal = await lab.refusal(candidate => candidate.subject === 'chunk' && candidate.peer === peer.peerId && candidate.reason === kase.reason, `a ${kase.reason} refusal`, from)
      t.regex(refusal.message, kase.message)
      t.is(refusal.packageId, pkg.id)
      t.is(/disconnecting the peer|peer banned/.test(refusal.message), kase.disconnected, refusal.message)
      t.is(peer.connectedTo(lab.agent.identity.peerId), !kase.disconnected)
      await assertNothingChanged(t, pkg, deployed)
    } finally {
      await peer.stop()
    }
  })
}

test.serial(`chunk case ${cases.length + 1}: a peer sending bad chunks repeatedly → disconnected, then banned for the rest of the task (its redials refused), admitted again after it`, async t => {
  const { lab } = t.context
  const pkg = await newPackage(t, 16)
  const peer = await lab.startPeer({ pkg: { id: pkg.id, chunks: pkg.chunks }, behaviour: behaviours.wrongHash })
  try {
    await lab.connect(peer, { persistent: true })
    const from = lab.refusals.length
    const isOffence = (refusal: Refusal): boolean => refusal.subject === 'chunk' && refusal.peer === peer.peerId
    // Capped, so that the download outlasts the peer's redials.
    const deploying = lab.deploy(pkg, { bandwidthKBps: 256 })
    const first = await lab.refusal(isOffence, 'the first bad chunk', from)
    t.like(first, { reason: 'hash-mismatch', details: { badChunks: 1, banned: false } })
    t.regex(first.message, /disconnecting the peer/)
    const ban = await lab.refusal(refusal => isOffence(refusal) && refusal.details?.banned === true, 'the ban', from)
    t.regex(ban.message, /peer banned for the rest of the download/)
    const banned = await lab.refusal(refusal => refusal.subject === 'peer' && refusal.peer === peer.peerId && refusal.reason === 'peer-banned', 'the ban, as a refusal of the peer', from)
    t.regex(banned.message, /peer banned for the rest of the download after 2 bad answers/)
    const redial = await lab.refusal(refusal => refusal.subject === 'peer' && refusal.peer === peer.peerId && refusal.reason === 'peer-banned' && refusal.details?.direction === 'inbound', 'a redial refused by the gater', from)
    t.regex(redial.message, /connection refused by the gater \(banned by a download for sending bad chunks\)/)
    const requestsAtBan = peer.requests.length
    const deployed = await deploying
    t.is(peer.requests.length, requestsAtBan, 'nothing was asked of it once banned')
    await assertNothingChanged(t, pkg, deployed)
    // The task is over: so is the ban.
    peer.giveUp(lab.agent.identity.peerId)
    await waitFor(async () => lab.agent.mesh!.gate.allows(peer.peerId) ? true : undefined, 'the ban to lift with the download', 10_000, 20)
    await lab.connect(peer)
    t.true(peer.connectedTo(lab.agent.identity.peerId))
  } finally {
    await peer.stop()
  }
})

test.serial('control: an honest peer with the package serves the whole download', async t => {
  const { lab } = t.context
  const pkg = await newPackage(t, 8)
  const peer = await lab.startPeer({ pkg: { id: pkg.id, chunks: pkg.chunks }, behaviour: behaviours.honest })
  try {
    await lab.connect(peer)
    const deployed = await lab.deploy(pkg)
    t.is(deployed.row.state, 'succeeded')
    t.is(deployed.row.bytesFromPeers, pkg.sizeBytes, 'the same peer code, answering rightly, is used')
    t.is(deployed.row.bytesFromOrigin, 0)
  } finally {
    await peer.stop()
  }
})
