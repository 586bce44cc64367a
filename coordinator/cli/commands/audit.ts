import { Command } from 'commander'
import { clientFrom, positiveInteger, print, printJson, run, UsageError, withApiOptions } from '../context.js'
import { table } from '../format.js'

/** Accepts an ISO time or a span back from now: 30m, 12h, 7d. */
export function parseSince (value: string, now = Date.now()): string {
  const span = /^(\d+)([smhd])$/.exec(value)
  if (span !== null) {
    const unitMs = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[span[2] as 's' | 'm' | 'h' | 'd']
    return new Date(now - Number(span[1]) * unitMs).toISOString()
  }
  const time = Date.parse(value)
  if (Number.isNaN(time)) throw new UsageError(`${value} is neither a time (2026-11-21T09:00:00Z) nor a span (30m, 12h, 7d)`)
  return new Date(time).toISOString()
}

export function auditCommand (): Command {
  return withApiOptions(new Command('audit'))
    .description('the audit log of operator changes, newest first (admin only)')
    .option('--actor <name>', 'only changes by this token name')
    .option('--since <time>', 'only changes since this time or span back (30m, 12h, 7d)')
    .option('--until <time>', 'only changes before this time or span back')
    .option('--limit <n>', 'entries per page (at most 1000)', positiveInteger, 50)
    .option('--cursor <cursor>', 'continue from a previous page')
    .option('--all', 'follow the pages to the end')
    .addHelpText('after', '\nExamples:\n  meshdeploy audit --since 24h\n  meshdeploy audit --actor alice --json')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const query = new URLSearchParams({ limit: String(options.limit) })
        if (options.actor !== undefined) query.set('actor', options.actor)
        if (options.since !== undefined) query.set('since', parseSince(options.since))
        if (options.until !== undefined) query.set('until', parseSince(options.until))
        let cursor: string | undefined = options.cursor
        const entries: any[] = []
        // With --all, pages are followed to the end; each page is bounded by the API.
        for (;;) {
          if (cursor !== undefined) query.set('cursor', cursor)
          const page = await client.get(`/v1/audit?${query.toString()}`)
          entries.push(...page.entries)
          cursor = page.nextCursor
          if (options.all !== true || cursor === undefined) break
        }
        client.close()
        if (options.json === true) return printJson(options.all === true ? { entries } : { entries, nextCursor: cursor })
        print(table(['TIME', 'ACTOR', 'ROLE', 'FROM', 'CHANGE', 'TARGETS', 'STATUS'], entries.map(e => [
          e.at, e.actor, e.role, e.address, `${e.method} ${e.route}`, e.targetIds.join(',') || '-', e.status
        ])))
        if (cursor !== undefined) process.stderr.write(`more: --cursor ${cursor}\n`)
      })
    })
}
