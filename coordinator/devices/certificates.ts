import {
  DEFAULT_DEVICE_CERTIFICATE_LIFETIME_MS, signDeviceCertificate, type SignedEnvelope
} from '../../protocol/index.js'
import type { CoordinatorKeyring } from '../signing-key.js'
import type { DeviceRecord, Store } from '../store/types.js'

/** Certificates kept signed in memory at most; past it the oldest go (signing one again is cheap and gives the same bytes). */
const MAX_CACHED_CERTIFICATES = 50_000

export interface DeviceCertificatesInit {
  keyring: CoordinatorKeyring
  store: Store
  /** @default DEFAULT_DEVICE_CERTIFICATE_LIFETIME_MS */
  lifetimeMs?: number
  now?: () => number
}

/**
 * Issues device certificates and keeps the revocation list. A certificate
 * covers a period: issued at the start of the current half-lifetime and
 * valid for a lifetime, so a device holding one always has at least half a
 * lifetime left, renewal is implicit (the next answer of the next period
 * carries the new one), and the same device in the same period gets the same
 * bytes (ed25519 is deterministic). A device blocked or retired is revoked
 * for as long as a certificate issued before could still be valid; after
 * that it drops off the list, which stays small.
 */
export class DeviceCertificates {
  private readonly keyring: CoordinatorKeyring
  private readonly store: Store
  private readonly lifetimeMs: number
  private readonly now: () => number
  private readonly cache = new Map<string, SignedEnvelope>()
  private readonly revokedAt = new Map<string, number>()
  private revokedList?: string[]

  constructor (init: DeviceCertificatesInit) {
    this.keyring = init.keyring
    this.store = init.store
    this.lifetimeMs = init.lifetimeMs ?? DEFAULT_DEVICE_CERTIFICATE_LIFETIME_MS
    this.now = init.now ?? Date.now
  }

  /** Loads the revocations that still matter: devices blocked or retired less than a lifetime ago. */
  async open (): Promise<void> {
    for (const status of ['blocked', 'retired'] as const) {
      let cursor: string | undefined
      do {
        const page = await this.store.collections.devices.page({ index: { name: 'status', term: status }, limit: 1000, ...(cursor !== undefined ? { cursor } : {}) })
        for (const { value } of page.items) this.revoke(value)
        cursor = page.cursor
      } while (cursor !== undefined)
    }
  }

  /** The half-lifetime period a moment falls in. */
  periodOf (nowMs: number): number {
    return Math.floor(nowMs / (this.lifetimeMs / 2))
  }

  /** The device's certificate for the current period, signed by the current key. */
  certificateFor (device: Pick<DeviceRecord, 'id' | 'peerId' | 'site'>): SignedEnvelope {
    const key = this.keyring.current
    const period = this.periodOf(this.now())
    const cacheKey = `${key.keyId}/${period}/${device.id}/${device.peerId}/${device.site}`
    let envelope = this.cache.get(cacheKey)
    if (envelope === undefined) {
      const issuedAtMs = period * (this.lifetimeMs / 2)
      envelope = signDeviceCertificate({
        type: 'meshdeploy.device-certificate',
        deviceId: device.id,
        peerId: device.peerId,
        site: device.site,
        issuedAt: new Date(issuedAtMs).toISOString(),
        expiresAt: new Date(issuedAtMs + this.lifetimeMs).toISOString()
      }, key)
      this.cache.set(cacheKey, envelope)
      if (this.cache.size > MAX_CACHED_CERTIFICATES) this.cache.delete(this.cache.keys().next().value!)
    }
    return envelope
  }

  /** A device left the active ones (blocked, retired): its certificates no longer count. */
  revoke (device: Pick<DeviceRecord, 'id' | 'statusChangedAt'>): void {
    const at = device.statusChangedAt !== undefined ? Date.parse(device.statusChangedAt) : this.now()
    if (at + this.lifetimeMs <= this.now()) return
    this.revokedAt.set(device.id, at)
    delete this.revokedList
  }

  /** A blocked device was unblocked. */
  reinstate (deviceId: string): void {
    if (this.revokedAt.delete(deviceId)) delete this.revokedList
  }

  /** Ids of the revoked devices whose certificates may still be valid, sorted. */
  revoked (): string[] {
    const now = this.now()
    for (const [id, at] of this.revokedAt) {
      if (at + this.lifetimeMs > now) continue
      this.revokedAt.delete(id)
      delete this.revokedList
    }
    this.revokedList ??= [...this.revokedAt.keys()].sort()
    return this.revokedList
  }
}
