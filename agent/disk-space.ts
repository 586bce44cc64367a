import { statfs } from 'node:fs/promises'
import { MIB } from '../protocol/index.js'
import { DiskFullError } from './errors.js'

/** Space kept free beside a download: the task store and the outbox must still be able to record what happened. */
export const DEFAULT_DISK_RESERVE_BYTES = 32 * MIB

/** Bytes an unprivileged process may still write on the file system that holds `path`. */
export async function freeBytesAt (path: string): Promise<number> {
  const stats = await statfs(path)
  return Number(stats.bavail) * Number(stats.bsize)
}

/**
 * Fails with DiskFullError, before anything is written, when the file
 * system holding `path` has less than `neededBytes` plus a reserve free:
 * a download that would fill the disk is refused while the agent can still
 * record and report why.
 */
export async function ensureFreeSpace (path: string, neededBytes: number, reserveBytes = DEFAULT_DISK_RESERVE_BYTES): Promise<void> {
  const freeBytes = await freeBytesAt(path)
  if (freeBytes < neededBytes + reserveBytes) throw new DiskFullError(path, neededBytes + reserveBytes, freeBytes)
}

/** Whether an error is the file system's "no space left" (or quota exceeded). */
export function isNoSpaceError (error: unknown): boolean {
  for (let current = error as { code?: unknown, cause?: unknown } | undefined, depth = 0; current !== undefined && current !== null && depth < 5; current = current.cause as typeof current, depth++) {
    if (current.code === 'ENOSPC' || current.code === 'EDQUOT') return true
  }
  return false
}
