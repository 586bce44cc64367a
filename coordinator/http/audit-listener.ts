import type { AuditLog } from '../audit/log.js'
import { summarizeChange, targetIdsOf } from '../audit/summary.js'
import type { ChangeListener } from './routes-table.js'

/** Writes every successful operator change to the audit log before its answer goes out. */
export function auditListener (audit: AuditLog): ChangeListener {
  return async ({ spec, ctx, principal, status, body, params }) => {
    if (principal?.kind !== 'operator') return
    const userAgent = ctx.get('user-agent')
    await audit.record({
      actor: principal.name,
      tokenId: principal.tokenId,
      role: principal.role,
      method: ctx.method,
      path: ctx.path.slice(0, 500),
      route: spec.path,
      targetIds: targetIdsOf(params, ctx.body),
      summary: summarizeChange(body, ctx.body),
      status,
      address: ctx.ip,
      ...(userAgent !== '' ? { userAgent: userAgent.slice(0, 200) } : {})
    })
  }
}
