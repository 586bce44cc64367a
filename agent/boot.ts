import { readFile } from 'node:fs/promises'
import { uptime } from 'node:os'

/** Tells one boot of this device from the next. */
export type BootIdentity = () => Promise<string>

/**
 * Linux's boot id, which changes at every boot; elsewhere the boot time to
 * the minute (uptime drifts by less).
 */
export const systemBootId: BootIdentity = async () => {
  try {
    return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()
  } catch {
    return `boot-${Math.round((Date.now() / 1000 - uptime()) / 60)}`
  }
}
