import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ExecutionContext } from 'ava'

/** A temporary folder removed when the test ends, pass or fail. */
export async function tempFolder (t: ExecutionContext, prefix: string): Promise<string> {
  const folder = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(async () => { await rm(folder, { recursive: true, force: true }) })
  return folder
}
