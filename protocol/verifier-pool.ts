import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'

/** One batch of signatures to check: each item's signature over its message against its public key. */
interface VerifyRequest {
  id: number
  signatures: Uint8Array[]
  messages: Uint8Array[]
  publicKeys: Uint8Array[]
}

interface VerifyAnswer {
  id: number
  /** 1 where the signature verified, 0 where it did not. */
  valid: Uint8Array
}

/**
 * The worker: checks every batch it is sent, synchronously, with Node's
 * built-in ed25519 (one core's worth of verification). Kept as source here
 * so that it runs the same whether this module is compiled or loaded from
 * TypeScript.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createPublicKey, verify } = require('node:crypto')
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
const keys = new Map()
function keyOf (raw) {
  const hex = Buffer.from(raw).toString('hex')
  let key = keys.get(hex)
  if (key === undefined) {
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
    if (keys.size > 100000) keys.clear()
    keys.set(hex, key)
  }
  return key
}
parentPort.on('message', ({ id, signatures, messages, publicKeys }) => {
  const valid = new Uint8Array(signatures.length)
  for (let index = 0; index < valid.length; index++) {
    try {
      valid[index] = verify(null, messages[index], keyOf(publicKeys[index]), signatures[index]) ? 1 : 0
    } catch {
      valid[index] = 0
    }
  }
  parentPort.postMessage({ id, valid })
})
`

/** Checks an ed25519 signature over a message; resolves false for a bad one. */
export type SignatureCheck = (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array) => Promise<boolean>

/** Signatures sent to a worker in one message at most. */
export const DEFAULT_VERIFIER_BATCH = 256

export interface VerifierPoolInit {
  /** @default one per core */
  threads?: number
  /** @default DEFAULT_VERIFIER_BATCH */
  maxBatch?: number
}

interface Pending {
  signature: Uint8Array
  message: Uint8Array
  publicKey: Uint8Array
  resolve: (valid: boolean) => void
  reject: (error: Error) => void
}

interface Slot {
  worker: Worker
  /** Batches sent and not answered yet, by id. */
  inFlight: Map<number, Pending[]>
  signatures: number
}

/**
 * Ed25519 verification on worker threads, one per core. The checks asked
 * for in one turn of the event loop go out together, in batches, to the
 * least loaded worker: the calling thread pays a message per batch rather
 * than a thread-pool job per signature, which is what a coordinator taking
 * in thousands of status records a second spends its main thread on
 * otherwise. A worker that dies fails its batches (the callers see an
 * error, not a verdict) and is replaced.
 */
export class VerifierPool {
  private readonly threads: number
  private readonly maxBatch: number
  private readonly slots: Slot[] = []
  private queue: Pending[] = []
  private scheduled = false
  private nextId = 0
  private closed = false

  constructor (init: VerifierPoolInit = {}) {
    this.threads = Math.max(1, init.threads ?? availableParallelism())
    this.maxBatch = Math.max(1, init.maxBatch ?? DEFAULT_VERIFIER_BATCH)
  }

  /** The pool's `SignatureCheck`. */
  readonly check: SignatureCheck = async (signature, message, publicKey) => {
    if (signature.byteLength !== 64 || publicKey.byteLength !== 32) return false
    if (this.closed) throw new Error('the signature verifier pool is closed')
    return await new Promise<boolean>((resolve, reject) => {
      this.queue.push({ signature, message, publicKey, resolve, reject })
      if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => { this.flush() })
      }
    })
  }

  /** Workers running now (started on first use). */
  get size (): number {
    return this.slots.length
  }

  async close (): Promise<void> {
    this.closed = true
    const slots = this.slots.splice(0)
    for (const pending of this.queue.splice(0)) pending.reject(new Error('the signature verifier pool closed'))
    await Promise.all(slots.map(async slot => {
      this.fail(slot, new Error('the signature verifier pool closed'))
      await slot.worker.terminate()
    }))
  }

  private flush (): void {
    this.scheduled = false
    if (this.closed) return
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch)
      const slot = this.leastLoaded()
      const id = this.nextId++
      slot.inFlight.set(id, batch)
      slot.signatures += batch.length
      const request: VerifyRequest = {
        id,
        signatures: batch.map(item => item.signature),
        messages: batch.map(item => item.message),
        publicKeys: batch.map(item => item.publicKey)
      }
      slot.worker.postMessage(request)
    }
  }

  private leastLoaded (): Slot {
    if (this.slots.length < this.threads) {
      const idle = this.slots.find(slot => slot.signatures === 0)
      return idle ?? this.spawn()
    }
    return this.slots.reduce((best, slot) => slot.signatures < best.signatures ? slot : best)
  }

  private spawn (): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true })
    // An idle pool does not keep the process alive.
    worker.unref()
    const slot: Slot = { worker, inFlight: new Map(), signatures: 0 }
    worker.on('message', (answer: VerifyAnswer) => {
      const batch = slot.inFlight.get(answer.id)
      if (batch === undefined) return
      slot.inFlight.delete(answer.id)
      slot.signatures -= batch.length
      for (const [index, pending] of batch.entries()) pending.resolve(answer.valid[index] === 1)
    })
    const lost = (error: Error): void => {
      const index = this.slots.indexOf(slot)
      if (index !== -1) this.slots.splice(index, 1)
      this.fail(slot, error)
    }
    worker.on('error', lost)
    worker.on('exit', code => { lost(new Error(`a signature verifier thread exited (code ${code})`)) })
    this.slots.push(slot)
    return slot
  }

  private fail (slot: Slot, error: Error): void {
    for (const batch of slot.inFlight.values()) for (const pending of batch) pending.reject(error)
    slot.inFlight.clear()
    slot.signatures = 0
  }
}
