import type { Store } from '../store/types.js'
import { HostKeyMismatchError, type PresentedHostKey } from './transport.js'
import type { PinnedHostKey } from './types.js'

/**
 * `SHA256:<base64>` as ssh-keygen -l prints it, from what operators paste:
 * with or without the prefix, with or without base64 padding. Undefined
 * when it is not a SHA-256 fingerprint.
 */
export function normalizeHostKeyFingerprint (text: string): string | undefined {
  const body = text.trim().replace(/^SHA256:/i, '').replace(/=+$/, '')
  return /^[A-Za-z0-9+/]{43}$/.test(body) ? `SHA256:${body}` : undefined
}

export interface HostKeyCheck {
  /** `<address>:<port>` */
  id: string
  presented: PresentedHostKey
  /** The fingerprint the operator gave for this host, normalized. */
  expected?: string
  /** Who gave it. */
  actor: string
}

/**
 * SSH host keys of push targets: pinned at first contact, or set from a
 * fingerprint the operator gave; a host that presents another key is
 * refused before any credential is sent to it.
 */
export class HostKeyBook {
  private readonly store: Store
  private readonly now: () => number
  /** Checks of one host one at a time, so that two first contacts cannot pin two keys. */
  private readonly pending = new Map<string, Promise<unknown>>()

  constructor (init: { store: Store, now?: () => number }) {
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  async get (id: string): Promise<PinnedHostKey | undefined> {
    return await this.store.collections.hostKeys.get(id)
  }

  /** Accepts the presented key (pinning it when new or given by the operator) or throws HostKeyMismatchError. */
  async check (check: HostKeyCheck): Promise<void> {
    const previous = this.pending.get(check.id) ?? Promise.resolve()
    const current = previous.catch(() => {}).then(async () => { await this.checkNow(check) })
    this.pending.set(check.id, current)
    try {
      await current
    } finally {
      if (this.pending.get(check.id) === current) this.pending.delete(check.id)
    }
  }

  private async checkNow (check: HostKeyCheck): Promise<void> {
    const { fingerprint } = check.presented
    if (check.expected !== undefined) {
      if (fingerprint !== check.expected) throw new HostKeyMismatchError(check.expected, fingerprint, 'the fingerprint the push names')
      const pinned = await this.get(check.id)
      if (pinned?.fingerprint !== fingerprint) await this.pin(check, check.actor)
      return
    }
    const pinned = await this.get(check.id)
    if (pinned === undefined) {
      await this.pin(check, 'first-contact')
      return
    }
    if (pinned.fingerprint !== fingerprint) {
      throw new HostKeyMismatchError(pinned.fingerprint, fingerprint, `pinned ${pinned.pinnedBy === 'first-contact' ? 'at first contact' : `from ${pinned.pinnedBy}'s fingerprint`} on ${pinned.pinnedAt}; if the host's key really changed, give its new fingerprint with the push`)
    }
  }

  private async pin (check: HostKeyCheck, pinnedBy: string): Promise<void> {
    const record: PinnedHostKey = {
      key: check.id,
      fingerprint: check.presented.fingerprint,
      ...(check.presented.keyType !== undefined ? { keyType: check.presented.keyType } : {}),
      pinnedAt: new Date(this.now()).toISOString(),
      pinnedBy
    }
    await this.store.write([{ type: 'put', collection: 'hostKeys', key: check.id, value: record }])
  }
}
