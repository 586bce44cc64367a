import { createHash } from 'node:crypto'
import { z } from 'zod'

/** Rings one task may have. */
export const MAX_PHASES = 10
export const DEFAULT_SUCCESS_PERCENT = 95
export const DEFAULT_MAX_FAILURE_PERCENT = 5

/**
 * One ring of a phased rollout (SCCM's phased deployment): the devices of
 * some groups, or a share of the resolved targets chosen by a stable hash;
 * the last ring takes every target not placed before it.
 */
export const phaseSchema = z.object({
  name: z.string().trim().min(1).max(100).optional(),
  /** The targets in these groups. */
  groups: z.array(z.string().trim().min(1).max(253)).min(1).max(100).optional(),
  /** Or this share of the targets, by a stable hash of task and device. */
  percent: z.number().min(0.1).max(100).optional(),
  /** The next ring starts once this share of the ring's devices succeeded. @default 95 */
  successPercent: z.number().min(0).max(100).optional(),
  /** And not before the ring has run this long. @default 0 */
  minSoakSeconds: z.number().int().min(0).max(90 * 24 * 3600).optional(),
  /** The rollout halts when more than this share of the ring's devices failed. @default 5 */
  maxFailurePercent: z.number().min(0).max(100).optional(),
  /** false: the next ring waits for an operator (POST /v1/tasks/:id/phases/next). @default true */
  autoPromote: z.boolean().optional()
}).strict()

export type PhaseSpec = z.infer<typeof phaseSchema>

export const phasesSchema = z.array(phaseSchema).min(2).max(MAX_PHASES).superRefine((phases, context) => {
  let percent = 0
  phases.forEach((phase, index) => {
    const last = index === phases.length - 1
    if (!last && (phase.groups === undefined) === (phase.percent === undefined)) {
      context.addIssue({ code: 'custom', path: [index, 'groups'], message: 'a ring is groups or a percent of the targets, one of the two' })
    }
    if (last && phase.groups !== undefined && phase.percent !== undefined) {
      context.addIssue({ code: 'custom', path: [index, 'percent'], message: 'a ring is groups or a percent of the targets, one of the two' })
    }
    percent += phase.percent ?? 0
  })
  if (percent > 100.0001) context.addIssue({ code: 'custom', path: [0, 'percent'], message: `the rings' percentages add up to ${percent}, more than 100` })
})

/** Where a phased rollout stands. */
export interface RolloutState {
  /** The ring being rolled out now (every ring before it is released too). */
  current: number
  rings: Array<{ startedAt?: string, promotedAt?: string, promotedBy?: string }>
  /** Rings whose automatic halt an operator overrode (by resuming): it does not trigger again there. */
  haltOverridden?: number[]
}

/** A device's place in [0, 1): the same for a task and device every time. */
export function stableShare (taskId: string, deviceId: string): number {
  const digest = createHash('sha256').update(`${taskId}\n${deviceId}`).digest()
  return digest.readUInt32BE(0) / 0x1_0000_0000
}

/**
 * The ring of a device: the first group ring one of its groups names;
 * otherwise the percent ring its stable share falls into (percent rings
 * cover consecutive slices of [0, 100)); otherwise the last ring.
 */
export function ringOf (taskId: string, device: { id: string, groups: readonly string[] }, phases: readonly PhaseSpec[]): number {
  for (const [index, phase] of phases.entries()) {
    if (phase.groups?.some(group => device.groups.includes(group)) === true) return index
  }
  const share = stableShare(taskId, device.id) * 100
  let upTo = 0
  for (const [index, phase] of phases.entries()) {
    if (phase.percent === undefined) continue
    upTo += phase.percent
    if (share < upTo) return index
  }
  return phases.length - 1
}

export interface RingCounts {
  /** Target devices in the ring. */
  total: number
  succeeded: number
  /** Devices whose last attempt failed. */
  failed: number
}

export type PhaseDecision =
  | { action: 'none' }
  | { action: 'halt', reason: string }
  | { action: 'promote', reason: string }
  /** The ring succeeded; the next may start at `atMs` (its soak time). */
  | { action: 'wait', atMs: number }

function percentOf (part: number, total: number): number {
  return total === 0 ? 0 : 100 * part / total
}

/**
 * What the scheduler does with a phased rollout now: halt it when the
 * current ring's failures exceed its threshold, promote the next ring once
 * enough of the current one succeeded and it soaked long enough, or wait.
 * Pure: the clock and the counts come in.
 */
export function decidePhase (input: { phases: readonly PhaseSpec[], state: RolloutState, counts: RingCounts, nowMs: number, halted?: boolean }): PhaseDecision {
  const { phases, state, counts, nowMs } = input
  if (input.halted === true) return { action: 'none' }
  const phase = phases[state.current]
  const name = phase.name ?? `ring ${state.current + 1}`
  const maxFailurePercent = phase.maxFailurePercent ?? DEFAULT_MAX_FAILURE_PERCENT
  const failedPercent = percentOf(counts.failed, counts.total)
  if (counts.failed > 0 && failedPercent > maxFailurePercent && state.haltOverridden?.includes(state.current) !== true) {
    return { action: 'halt', reason: `${counts.failed} of ${counts.total} device(s) of ${name} failed (${failedPercent.toFixed(1)}%, more than ${maxFailurePercent}%)` }
  }
  if (state.current >= phases.length - 1) return { action: 'none' }
  const successPercent = phase.successPercent ?? DEFAULT_SUCCESS_PERCENT
  const succeededPercent = counts.total === 0 ? 100 : percentOf(counts.succeeded, counts.total)
  if (succeededPercent < successPercent) return { action: 'none' }
  if (phase.autoPromote === false) return { action: 'none' }
  const startedAt = Date.parse(state.rings[state.current]?.startedAt ?? new Date(nowMs).toISOString())
  const soakUntil = startedAt + (phase.minSoakSeconds ?? 0) * 1000
  if (nowMs < soakUntil) return { action: 'wait', atMs: soakUntil }
  return { action: 'promote', reason: `${counts.succeeded} of ${counts.total} device(s) of ${name} succeeded (${succeededPercent.toFixed(1)}%, at least ${successPercent}%)` }
}

/** The state of a new phased rollout: the first ring starts with the task. */
export function initialRollout (phases: readonly PhaseSpec[], startAt: string): RolloutState {
  return { current: 0, rings: phases.map((_, index) => index === 0 ? { startedAt: startAt } : {}) }
}
