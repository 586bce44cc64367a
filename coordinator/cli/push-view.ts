import { setTimeout as sleep } from 'node:timers/promises'
import type { ApiClient } from './api-client.js'
import { bar, printable, table } from './format.js'

const FINAL = new Set(['succeeded', 'failed', 'cancelled'])
const STATE_ORDER = ['succeeded', 'failed', 'cancelled', 'running', 'waiting', 'pending']

/** One line of a push's progress: a bar of the hosts done and the counts of each state. */
export function renderPushProgress (push: { name: string, run: number, status: string, counts: Record<string, number> }): string {
  const total = Object.values(push.counts).reduce((sum, count) => sum + count, 0)
  const done = ['succeeded', 'failed', 'cancelled'].reduce((sum, state) => sum + (push.counts[state] ?? 0), 0)
  const counts = STATE_ORDER.filter(state => (push.counts[state] ?? 0) > 0).map(state => `${state} ${push.counts[state]}`).join(', ')
  return `${bar(total > 0 ? done / total : 0)} ${String(done).padStart(String(total).length)}/${total} hosts  run ${push.run} ${push.status}${counts !== '' ? `: ${counts}` : ''}`
}

/** The results of a run: one row per host, then every attempt of the hosts that did not succeed with each credential's outcome. */
export function renderPushResults (hosts: any[]): string {
  const rows = hosts.map(host => [host.host, host.state, host.credentialName ?? '-', host.deviceId ?? '-', host.attempts.length, host.platform ?? '-', (host.message ?? '').slice(0, 100)])
  let text = table(['HOST', 'STATE', 'CREDENTIAL', 'DEVICE', 'ATTEMPTS', 'PLATFORM', 'MESSAGE'], rows)
  for (const host of hosts.filter(candidate => candidate.state !== 'succeeded')) {
    text += `\n${host.host as string}: ${host.state as string}\n`
    for (const attempt of host.attempts) {
      text += `  attempt ${attempt.number as number}: ${attempt.outcome ?? 'running'}${attempt.reason !== undefined ? ` (${attempt.reason as string})` : ''}${attempt.exitCode !== undefined && attempt.exitCode !== null ? `, exit ${attempt.exitCode as number}` : ''} — ${attempt.detail ?? ''}\n`
      for (const tried of attempt.credentials) text += `    ${(tried.credentialName ?? tried.credentialId) as string}: ${tried.outcome as string}${tried.detail !== undefined ? ` — ${tried.detail as string}` : ''}\n`
      if (attempt.outputTail !== undefined) text += attempt.outputTail.trim().split('\n').slice(-5).map((line: string) => `    | ${line}\n`).join('')
    }
  }
  return text
}

/** Every host of one run, page by page. */
export async function allPushHosts (client: ApiClient, id: string, run?: number): Promise<any[]> {
  const hosts: any[] = []
  let cursor: string | undefined
  do {
    const query = new URLSearchParams({ limit: '1000', ...(run !== undefined ? { run: String(run) } : {}), ...(cursor !== undefined ? { cursor } : {}) })
    const page = await client.get(`/v1/push-installs/${encodeURIComponent(id)}?${query.toString()}`)
    hosts.push(...page.hosts)
    cursor = page.nextCursor
  } while (cursor !== undefined)
  return hosts
}

/**
 * Follows a push until its run ends: on a terminal the progress line is
 * redrawn in place, elsewhere a line is printed when the counts change.
 * Answers the push as it ended.
 */
export async function followPush (client: ApiClient, id: string, options: { output?: NodeJS.WriteStream, intervalMs?: number, signal?: AbortSignal } = {}): Promise<any> {
  const output = options.output ?? process.stderr
  let last = ''
  for (;;) {
    const push = await client.get(`/v1/push-installs/${encodeURIComponent(id)}?limit=1`)
    const line = printable(renderPushProgress(push))
    if (line !== last) {
      output.write(output.isTTY === true ? `\r\x1b[2K${line}` : `${line}\n`)
      last = line
    }
    if (push.status !== 'queued' && push.status !== 'running') {
      if (output.isTTY === true) output.write('\n')
      return push
    }
    await sleep(options.intervalMs ?? 1000, undefined, options.signal !== undefined ? { signal: options.signal } : {})
  }
}

export function isFinalHostState (state: string): boolean {
  return FINAL.has(state)
}
